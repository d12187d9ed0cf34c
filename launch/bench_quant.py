"""int8 weight-only against bf16: greedy codes agreement, logits KL and memory, on random weights.

The program is flmjax/cli/bench_quant.py (installed: `flmjax-bench-quant`)."""

from flmjax.cli.bench_quant import main

if __name__ == "__main__":
    raise SystemExit(main())
