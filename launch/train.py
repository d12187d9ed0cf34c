"""Train FLM-Audio, one stage or a chain of stages.

    python launch/train.py --config=ft2 --init.params_from=runs/ft1 [--optimizer.peak_lr=1e-5 ...]
    python launch/train.py --config=demo          # a small model through all four stages on a CPU

`--config` names a file in configs/ (or is a path to one). Any field of the stage config can be
overridden: `--optimizer.peak_lr=1e-5`, `--optimizer.peak_lr 1e-5` or `--set optimizer.peak_lr=1e-5`.
`--print-config` shows the resolved config(s) and exits. Exit status: 0 done, 2 bad config or input,
143 stopped by SIGTERM after saving a checkpoint (run the same command again to resume).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

from flmjax.config import ConfigError
from flmjax.train.config import load_stages, parse_override

PREEMPTED_EXIT = 128 + 15


def split_overrides(args: list[str]) -> dict[str, str]:
    """`--a.b=v`, `--a.b v` -> {"a.b": "v"}."""
    overrides: dict[str, str] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            raise ConfigError(f"unexpected argument {arg!r} (overrides look like --field.name=value)")
        if "=" not in arg:
            if i + 1 >= len(args) or args[i + 1].startswith("--"):
                raise ConfigError(f"{arg} needs a value (--field.name=value)")
            arg = f"{arg}={args[i + 1]}"
            i += 1
        key, value = parse_override(arg)
        overrides[key] = value
        i += 1
    return overrides


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--config", required=True, help="a config name in configs/ (post1, post2, ft1, ft2, demo) or a path"
    )
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="override a config field")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config(s) and exit")
    args, rest = parser.parse_known_args(argv)
    try:
        overrides = split_overrides(rest)
        overrides.update(parse_override(item) for item in args.set)
        stages = load_stages(args.config, overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.print_config:
        print(json.dumps([dataclasses.asdict(s) for s in stages], indent=2, default=str))
        return 0

    import jax

    from flmjax.interop.trainer_checkpoint import CheckpointError
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
                print(
                    f"{config.stage}: stopped by SIGTERM at step {result.step}; the checkpoint is saved: run again to resume"
                )
                return PREEMPTED_EXIT
            if config.export.dir and jax.process_count() > 1:
                print(
                    f"{config.stage}: export with launch/export.py --checkpoint {result.run_dir} (one host reads it all)"
                )
            elif config.export.dir:
                out = export_checkpoint(result.run_dir, config.export.dir, config.export.dtype)
                print(
                    f"{config.stage}: exported to {out} ({config.export.dtype}, HF layout; FLMAudio.from_pretrained loads it)"
                )
    except (ConfigError, SetupError, CheckpointError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("where everything went:")
    for config, result in zip(stages, results):
        print(f"  {config.stage}: checkpoints {result.run_dir}/checkpoints, metrics {result.run_dir}/metrics.jsonl, "
              f"TensorBoard {result.run_dir}/tensorboard")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
