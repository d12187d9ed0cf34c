"""Per-frame latency of streaming decoding: flmjax's one-program frame step vs a PyTorch loop in the release's style.

The program is flmjax/cli/bench_infer.py (installed: `flmjax-bench-infer`)."""

from flmjax.cli.bench_infer import main

if __name__ == "__main__":
    raise SystemExit(main())
