"""The named stage configs: one module per name, whose `config()` returns a `TrainConfig`, or a tuple of
them for a chain of stages (`demo`) run in order, each after the first starting from the previous one's
run directory.

    base     the real model's shared numerics, mesh and cadence (the stages below start from it)
    post1, post2, ft1, ft2   the papers' four stages (Table 3)
    demo     a small model through all four stages on the bundled demo corpus, on a CPU

To add a stage `mystage`: write `flmjax/configs/mystage.py` with

    def config() -> TrainConfig:
        c = base.config()  # or another stage's config()
        return dataclasses.replace(c, stage="mystage", optimizer=dataclasses.replace(c.optimizer, peak_lr=1e-5))

and `--config=mystage` runs it (`--config=path/to/file.py` loads such a module from anywhere). Settings
that a stage requires of the library (what to start from, whether the demo corpus will do) are fields of
the config, never tests of the stage's name.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import pkgutil
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from flmjax.config import ConfigError
from flmjax.train.config import TrainConfig, with_overrides


def names() -> list[str]:
    """The named configs (the modules of this package)."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def _module(name: str) -> ModuleType:
    if name.endswith(".py") or "/" in name:
        path = Path(name)
        spec = importlib.util.spec_from_file_location(f"flmjax_user_config_{path.stem}", path)
        if not path.is_file() or spec is None or spec.loader is None:
            raise ConfigError(f"config file {name} does not exist")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    if name not in names():
        raise ConfigError(f"unknown config {name!r} (known: {', '.join(names())}, or a path to a .py file)")
    return importlib.import_module(f"{__name__}.{name}")


def stages(name: str) -> tuple[TrainConfig, ...]:
    """The stage(s) a config names, as written (no chaining, no overrides)."""
    module = _module(name)
    if not callable(getattr(module, "config", None)):
        raise ConfigError(f"config {name!r} defines no config() function")
    result = module.config()
    result = result if isinstance(result, tuple) else (result,)
    if not result or not all(isinstance(s, TrainConfig) for s in result):
        raise ConfigError(f"config {name!r}: config() must return a TrainConfig or a tuple of them")
    return result


def load(
    name: str, overrides: Sequence[str] = (), prog: str = "flmjax-train", description: str | None = None
) -> list[TrainConfig]:
    """The stages of config `name`, each with the command-line `overrides` (`--optimizer.peak_lr=8e-6`)
    applied; in a chain each stage after the first starts from the previous stage's run directory
    (`init.params_from`, which an override may still change)."""
    loaded: list[TrainConfig] = []
    for stage in stages(name):
        if loaded:
            stage = dataclasses.replace(
                stage, init=dataclasses.replace(stage.init, params_from=loaded[-1].resolved_run_dir)
            )
        loaded.append(with_overrides(stage, overrides, prog=prog, description=description))
    return loaded
