"""Mimi encoding throughput for corpus preparation: hours of audio encoded per hour per device.

The program is flmjax/cli/bench_prepare.py (installed: `flmjax-bench-prepare`)."""

from flmjax.cli.bench_prepare import main

if __name__ == "__main__":
    raise SystemExit(main())
