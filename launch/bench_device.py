"""The device benchmark: flm7b decoding, Mimi streaming and a train step on one GPU, in one run (<= 8 min).

The program is flmjax/cli/bench_device.py (installed: `flmjax-bench-device`)."""

from flmjax.cli.bench_device import main

if __name__ == "__main__":
    raise SystemExit(main())
