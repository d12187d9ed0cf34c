"""Stage configuration: nested frozen dataclasses, named config files, and `a.b=value` overrides.

A config file under `configs/` is Python holding plain data:

    BASE = "base"                      # the config it starts from (omit for the dataclass defaults)
    OVERRIDES = {"optimizer.peak_lr": 8e-6, ...}   # dotted field -> value
    CHAIN = ("post1", "post2", ...)    # optional: run these configs in order, this file's overrides on
    STAGE_OVERRIDES = {"post1": {...}} # top of each (and per stage), each stage starting from the last

The command line adds overrides with the same dotted names (`--optimizer.peak_lr=1e-5` or
`--set optimizer.peak_lr=1e-5`); every override is validated against the dataclass field's type, and an
unknown field or a value of the wrong type is one clear `ConfigError` line.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import math
import os
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from flmjax.config import DTYPES, REMAT_POLICIES, ConfigError, ModelConfig, get_model_config
from flmjax.data.config import DataConfig, get_data_config
from flmjax.train.loss import LossCoefficients

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


@dataclasses.dataclass(frozen=True)
class ModelSettings:
    """Which architecture (a name in `flmjax.config.MODEL_CONFIGS`) and its run-time numerics."""

    name: str = "flm7b"
    dtype: str = "bfloat16"  # compute
    param_dtype: str = "float32"  # master weights (and so the optimizer state)
    remat: str = "full"
    scan_layers: bool = True
    attention_chunk: int = 0
    text_loss_chunk: int = 0

    def __post_init__(self) -> None:
        if self.remat not in REMAT_POLICIES:
            raise ConfigError(f"model.remat must be one of {REMAT_POLICIES}, got {self.remat!r}")
        for name in ("dtype", "param_dtype"):
            if getattr(self, name) not in DTYPES:
                raise ConfigError(f"model.{name} must be one of {DTYPES}, got {getattr(self, name)!r}")

    def build(self) -> ModelConfig:
        return get_model_config(
            self.name,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            remat=self.remat,
            scan_layers=self.scan_layers,
            attention_chunk=self.attention_chunk,
            text_loss_chunk=self.text_loss_chunk,
        )


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """AdamW on a cosine schedule. Peak/end rates are the papers' (Table 3); the rest are choices
    (training.md section 5): betas (0.9, 0.95), weight decay 0.1, clipping 1.0, a short warmup."""

    peak_lr: float = 2e-4
    end_lr: float = 1e-5
    warmup_fraction: float = 0.01  # of the stage's steps, linear from 0; 0 = none
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.1
    clip_norm: float = 1.0  # global gradient norm; 0 = no clipping

    def __post_init__(self) -> None:
        if not (self.peak_lr > 0 and self.end_lr >= 0):
            raise ConfigError(f"optimizer: peak_lr must be > 0 and end_lr >= 0, got {self.peak_lr}, {self.end_lr}")
        if not 0 <= self.warmup_fraction < 1:
            raise ConfigError(f"optimizer.warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        if not (0 <= self.b1 < 1 and 0 <= self.b2 < 1):
            raise ConfigError(f"optimizer betas must be in [0, 1), got ({self.b1}, {self.b2})")
        if self.weight_decay < 0 or self.clip_norm < 0 or self.eps <= 0:
            raise ConfigError("optimizer: weight_decay and clip_norm must be >= 0 and eps > 0")

    def warmup_steps(self, total_steps: int) -> int:
        return int(math.ceil(self.warmup_fraction * total_steps))


@dataclasses.dataclass(frozen=True)
class DPOConfig:
    """Direct preference optimisation (`flmjax.train.dpo`) on preference pairs; the defaults are
    BayLing-Duplex's Stage II (Table 4's best row): beta 0.5, lambda_ftx 0.5."""

    beta: float = 0.5  # the KL coefficient
    lambda_ftx: float = 0.5  # weight of the auxiliary SFT term on the chosen sequences

    def __post_init__(self) -> None:
        if not self.beta > 0 or self.lambda_ftx < 0:
            raise ConfigError(f"dpo: beta must be > 0 and lambda_ftx >= 0, got {self.beta}, {self.lambda_ftx}")


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Device mesh sizes; one may be -1 (all remaining devices)."""

    data: int = -1
    fsdp: int = 1
    tensor: int = 1

    def __post_init__(self) -> None:
        sizes = (self.data, self.fsdp, self.tensor)
        if any(s == 0 or s < -1 for s in sizes) or sizes.count(-1) > 1:
            raise ConfigError(f"mesh sizes must be positive (one may be -1), got {sizes}")


@dataclasses.dataclass(frozen=True)
class InitConfig:
    """Where a run's state comes from when its own run directory has no checkpoint yet, in this order:
    a full trainer state (`state_from`), parameters only (`params_from`: a trainer checkpoint or an
    HF-layout export: how a stage starts from the previous one), Qwen2.5(-VL) LM weights in HF
    safetensors (`qwen_from`: how post1 starts), or random parameters when `random_ok`."""

    state_from: str = ""
    params_from: str = ""
    qwen_from: str = ""
    random_ok: bool = False
    seed: int = 0  # fresh parameters (random init, and what Qwen weights do not cover)


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    every_steps: int = 1000
    keep: int = 3  # most recent checkpoints kept
    async_save: bool = True

    def __post_init__(self) -> None:
        if self.every_steps < 1 or self.keep < 1:
            raise ConfigError("checkpoint.every_steps and checkpoint.keep must be >= 1")


@dataclasses.dataclass(frozen=True)
class LogConfig:
    every_steps: int = 10
    eval_every_steps: int = 1000  # 0 = no periodic evaluation (one still runs at the end if eval_batches)
    eval_batches: int = 8  # batches of the held-out split per evaluation; 0 = no evaluation
    tensorboard: bool = True
    progress: bool = True  # tqdm bar

    def __post_init__(self) -> None:
        if self.every_steps < 1 or self.eval_every_steps < 0 or self.eval_batches < 0:
            raise ConfigError("log.every_steps must be >= 1, log.eval_every_steps and log.eval_batches >= 0")


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """After the stage, write its final parameters in the release's HF layout (`launch/export.py` does
    the same for any checkpoint)."""

    dir: str = ""  # empty: no export
    dtype: str = "bfloat16"  # the release's

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ConfigError(f"export.dtype must be one of {DTYPES}, got {self.dtype!r}")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One training stage. Defaults are the papers' Table 3 for post1 (see configs/)."""

    stage: str = "post1"
    epochs: float = 3.3  # the schedule length is ceil(epochs * samples / global batch) steps ...
    steps: int = 0  # ... unless this is > 0
    # Gradient accumulation: each global batch (data.global_batch) is split into this many micro-batches;
    # -1: as many as leave one sequence per batch shard (data x fsdp devices) in each.
    micro_batches: int = 1
    run_root: str = "runs"
    run_dir: str = ""  # default: <run_root>/<stage>
    distributed: bool = False  # jax.distributed.initialize (also when JAX_COORDINATOR_ADDRESS is set)
    compile_cache: bool = True  # JAX's persistent compilation cache in <run_root>/jax_cache (resumes, chains)
    model: ModelSettings = ModelSettings()
    data: DataConfig = get_data_config("post1")  # corpora, layout, global batch (Table 3: 256), data seed
    eval_data: DataConfig | None = None  # a held-out split (e.g. a dev corpus) for evaluation; None: none
    loss: LossCoefficients = LossCoefficients()
    dpo: DPOConfig | None = None  # set: the stage optimises DPO + SFT on preference pairs (data.preference)
    optimizer: OptimizerConfig = OptimizerConfig()
    mesh: MeshConfig = MeshConfig()
    init: InitConfig = InitConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    log: LogConfig = LogConfig()
    export: ExportConfig = ExportConfig()

    def __post_init__(self) -> None:
        if self.micro_batches == 0 or self.micro_batches < -1 or self.data.global_batch % abs(self.micro_batches):
            raise ConfigError(
                f"data.global_batch {self.data.global_batch} must be a multiple of micro_batches {self.micro_batches} (or -1)"
            )
        if self.epochs <= 0 and self.steps <= 0:
            raise ConfigError("set epochs > 0 or steps > 0")
        if self.steps < 0:
            raise ConfigError(f"steps must be >= 0, got {self.steps}")
        if (self.dpo is None) != (self.data.preference is None):
            raise ConfigError("dpo and data.preference go together: DPO trains on preference pairs, and only DPO does")

    @property
    def resolved_run_dir(self) -> str:
        return os.path.abspath(self.run_dir or os.path.join(self.run_root, self.stage))

    def total_steps(self, num_samples: int) -> int:
        """The schedule's length: `steps`, or epochs x samples / batch (papers: fractional epochs)."""
        if self.steps > 0:
            return self.steps
        return max(1, int(math.ceil(self.epochs * num_samples / self.data.global_batch)))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --- overrides -----------------------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _parse_text(text: str) -> Any:
    """A command-line value: a Python literal when it is one (1e-5, True, (0.2, 2.0), "x"), else the text."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against the annotation `tp` (converting CLI text, ints for floats, lists for tuples)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: cannot take {value!r}")
    if origin is typing.Literal:
        if isinstance(value, str) and value not in typing.get_args(tp):
            value = _parse_text(value)
        if value not in typing.get_args(tp):
            raise ConfigError(f"{where} must be one of {typing.get_args(tp)}, got {value!r}")
        return value
    if origin in (tuple, list):
        if isinstance(value, str):
            value = _parse_text(value if "," in value or value.strip()[:1] in "([" else value + ",")
        if not isinstance(value, (tuple, list)):
            raise ConfigError(f"{where} must be a sequence, got {value!r}")
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{where} must have {len(args)} items, got {len(value)}")
            items = [_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args))]
        else:
            item_tp = args[0] if args else Any
            items = [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, Mapping):  # a fresh instance from its fields (the others keep their defaults)
            hints = typing.get_type_hints(tp)
            unknown = sorted(set(value) - set(hints))
            if unknown:
                raise ConfigError(f"unknown config field '{where}.{unknown[0]}' (known: {', '.join(sorted(hints))})")
            try:
                return tp(**{k: _coerce(v, hints[k], f"{where}.{k}") for k, v in value.items()})
            except TypeError as e:
                raise ConfigError(f"{where}: {e}") from None
        raise ConfigError(f"{where} must be a {tp.__name__} or a mapping of its fields, got {value!r}")
    if isinstance(value, str) and tp is not str:
        value = _parse_text(value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is bool and isinstance(value, int) and not isinstance(value, bool) and value in (0, 1):
        return bool(value)
    if isinstance(tp, type) and (not isinstance(value, tp) or (tp is int and isinstance(value, bool))):
        raise ConfigError(f"{where} must be {_type_name(tp)}, got {value!r}")
    return value


def apply_overrides(config: Any, overrides: Mapping[str, Any], prefix: str = "") -> Any:
    """A copy of the dataclass `config` with dotted-name overrides applied (values may be CLI text).

    A value for a nested dataclass field may itself be a mapping of that dataclass's fields.
    """
    nested: dict[str, dict[str, Any]] = {}
    direct: dict[str, Any] = {}
    for key, value in overrides.items():
        head, _, rest = key.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            direct[head] = value
    fields = {f.name: f for f in dataclasses.fields(config)}
    hints = typing.get_type_hints(type(config))
    changes: dict[str, Any] = {}
    for name in [*direct, *nested]:
        if name not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"unknown config field '{prefix}{name}' (known: {known})")
    for name, value in direct.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp) and isinstance(value, Mapping):
            changes[name] = apply_overrides(getattr(config, name), value, prefix=f"{prefix}{name}.")
        else:
            changes[name] = _coerce(value, tp, f"{prefix}{name}")
    for name, sub in nested.items():
        inner = changes.get(name, getattr(config, name))
        if not dataclasses.is_dataclass(inner):
            raise ConfigError(f"config field {prefix}{name} has no sub-fields (tried {prefix}{name}.{next(iter(sub))})")
        changes[name] = apply_overrides(inner, sub, prefix=f"{prefix}{name}.")
    try:
        return dataclasses.replace(config, **changes)
    except (TypeError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"{prefix or 'config'}: {e}") from None


def parse_override(item: str) -> tuple[str, str]:
    """`a.b=value` -> ("a.b", "value")."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} is not of the form field.name=value")
    return key.strip().lstrip("-"), value


# --- named config files --------------------------------------------------------------------------


def _config_path(name: str) -> Path:
    path = Path(name)
    if path.suffix == ".py" or os.sep in name:
        return path
    return CONFIG_DIR / f"{name}.py"


def _load_module(name: str) -> types.ModuleType:
    path = _config_path(name)
    if not path.is_file():
        known = sorted(p.stem for p in CONFIG_DIR.glob("*.py") if not p.stem.startswith("_"))
        raise ConfigError(f"unknown config {name!r}: no {path} (known: {', '.join(known)})")
    spec = importlib.util.spec_from_file_location(f"flmjax_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_config(name: str, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """The `TrainConfig` of config file `name` (following its BASE chain), then `overrides` applied.

    A chain config (one with CHAIN) cannot be loaded as one stage: use `load_stages`.
    """
    module = _load_module(name)
    if getattr(module, "CHAIN", None):
        raise ConfigError(f"config {name!r} is a chain of stages {tuple(module.CHAIN)}; load it with load_stages")
    base = getattr(module, "BASE", None)
    config = load_config(base) if base else TrainConfig()
    config = apply_overrides(config, getattr(module, "OVERRIDES", {}))
    return apply_overrides(config, overrides or {})


def load_stages(name: str, overrides: Mapping[str, Any] | None = None) -> list[TrainConfig]:
    """The stages a config names: itself, or for a chain config each stage of CHAIN with the chain's
    OVERRIDES and STAGE_OVERRIDES[stage] on top. Each chained stage after the first starts from the
    previous stage's run directory (`init.params_from`) unless an override says otherwise."""
    module = _load_module(name)
    chain: Sequence[str] = getattr(module, "CHAIN", ()) or ()
    if not chain:
        return [load_config(name, overrides)]
    common = dict(getattr(module, "OVERRIDES", {}))
    per_stage: Mapping[str, Mapping[str, Any]] = getattr(module, "STAGE_OVERRIDES", {})
    stages: list[TrainConfig] = []
    for stage in chain:
        config = load_config(stage, common)
        if stages:
            config = apply_overrides(config, {"init.params_from": stages[-1].resolved_run_dir})
        config = apply_overrides(config, {**per_stage.get(stage, {}), **(overrides or {})})
        stages.append(config)
    return stages
