"""Evaluate a full-duplex model (see flmjax/cli/evaluate.py and README.md, "Evaluation")."""

from flmjax.cli.evaluate import main

if __name__ == "__main__":
    raise SystemExit(main())
