"""Streaming Mimi, flmjax vs kyutai's `moshi` package: time per 80 ms frame (encode + decode), same weights.

The program is flmjax/cli/bench_mimi.py (installed: `flmjax-bench-mimi`)."""

from flmjax.cli.bench_mimi import main

if __name__ == "__main__":
    raise SystemExit(main())
