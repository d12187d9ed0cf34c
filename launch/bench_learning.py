"""Train the school chain on the synthetic curriculum and score it on held-out dialogs (see
flmjax/cli/bench_learning.py and README.md, "Learning to take turns")."""

from flmjax.cli.bench_learning import main

if __name__ == "__main__":
    raise SystemExit(main())
