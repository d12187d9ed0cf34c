"""Train FLM-Audio, one stage or a chain of stages.

    flmjax-train --config=ft2 --init.params_from=runs/ft1 [--optimizer.peak_lr=8e-6 ...]
    flmjax-train --config=demo          # a small model through all four stages on a CPU

(`python launch/train.py` is the same program.) `--config` names a stage config in flmjax/configs/
(base, post1, post2, ft1, ft2, demo, ...) or is a path to a .py file defining `config()`. Any field of
the stage config can be overridden, with its type checked: `--optimizer.peak_lr=1e-5`,
`--optimizer.peak_lr 1e-5` or `--set optimizer.peak_lr=1e-5`. `--corpus=X` replaces the stage's corpora
with one: a prepared folder, a manifest, `moshi:FILE.jsonl`, `tfds:NAME` or `hf:PATH`. `--config=NAME --help` lists
every field with its type and that config's value; `--print-config` prints the resolved config(s) as JSON and exits.
Exit status: 0 done, 2 bad config or input, 143 stopped by SIGTERM after saving a checkpoint (run the
same command again to resume).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

from flmjax import configs
from flmjax.config import ConfigError
from flmjax.train.config import TrainConfig, with_corpus

PREEMPTED_EXIT = 128 + 15
_HELP = (
    "Train FLM-Audio: --config=NAME (a stage config in flmjax/configs/: {names}; or a .py file defining "
    "config()), then any field below as --field.name=value or --set field.name=value (defaults shown are "
    "that config's). --print-config prints the resolved config(s) as JSON. Exit status: 0 done, 2 bad "
    "config or input, 143 stopped by SIGTERM after a checkpoint (run again to resume). Relative paths (run_root "
    "runs/ and the run directories under it) are taken from the current directory."
)


def _launcher_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """`--config`, `--print-config` and `--set` here; everything else is a config override for tyro."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--config")
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--print-config", action="store_true")
    parser.add_argument("--corpus")
    args, rest = parser.parse_known_args(argv)
    for item in args.set:
        if "=" not in item:
            raise ConfigError(f"--set {item!r} is not of the form field.name=value")
        rest.append(f"--{item}")
    return args, rest


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    help_text = _HELP.format(names=", ".join(configs.names()))
    try:
        args, overrides = _launcher_args(argv)
        if args.config is None:
            if not {"-h", "--help"} & set(overrides):
                raise ConfigError(f"--config is required: one of {', '.join(configs.names())} or a .py file")
            stages = configs.load("base", overrides, description=help_text)  # --help alone: the fields
        else:
            stages = configs.load(args.config, overrides, description=help_text)
        if args.corpus:
            stages = [with_corpus(stage, args.corpus) for stage in stages]
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except SystemExit as e:  # --help
        return int(e.code or 0)
    if args.print_config:
        print(json.dumps([dataclasses.asdict(s) for s in stages], indent=2, default=str))
        return 0
    return _train(stages)


def _train(stages: list[TrainConfig]) -> int:
    import jax

    from flmjax.interop.trainer_checkpoint import CheckpointError
    from flmjax.storage import StorageError
    from flmjax.train.checkpoint import export_checkpoint
    from flmjax.train.loop import train
    from flmjax.train.setup import SetupError

    results = []
    try:
        for config in stages:
            started = time.perf_counter()
            result = train(config)
            seconds = time.perf_counter() - started
            results.append(result)
            print(
                f"{config.stage}: steps {result.step}/{result.total_steps} in {seconds:.0f} s, {result.run_dir} "
                f"(started from {result.source}); last loss {result.last.get('loss', float('nan')):.4f}"
            )
            if result.preempted:
                print(f"{config.stage}: stopped by SIGTERM at step {result.step}; the checkpoint is saved: "
                      "run again to resume")  # fmt: skip
                return PREEMPTED_EXIT
            if config.export.dir and jax.process_count() > 1:
                print(f"{config.stage}: export with flmjax-export --checkpoint {result.run_dir} "
                      "(one host reads it all)")  # fmt: skip
            elif config.export.dir:
                out = export_checkpoint(result.run_dir, config.export.dir, config.export.dtype)
                print(f"{config.stage}: exported to {out} ({config.export.dtype}, HF layout; "
                      "FLMAudio.from_pretrained loads it)")  # fmt: skip
    except (ConfigError, SetupError, CheckpointError, StorageError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("where everything went:")
    for config, result in zip(stages, results):
        print(f"  {config.stage}: checkpoints {result.run_dir}/checkpoints, metrics {result.run_dir}/metrics.jsonl, "
              f"TensorBoard {result.run_dir}/tensorboard")  # fmt: skip
    return 0
