"""Throughput of the whole input pipeline on one CPU core: prepared records -> delayed batches.

The program is flmjax/cli/bench_data.py (installed: `flmjax-bench-data`)."""

from flmjax.cli.bench_data import main

if __name__ == "__main__":
    raise SystemExit(main())
