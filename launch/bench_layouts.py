"""Throughput of stream assembly on one CPU core: samples/s of each layout, delays included.

The program is flmjax/cli/bench_layouts.py (installed: `flmjax-bench-layouts`)."""

from flmjax.cli.bench_layouts import main

if __name__ == "__main__":
    raise SystemExit(main())
