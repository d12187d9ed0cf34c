"""Train FLM-Audio, one stage or a chain of stages (see flmjax/cli/train.py; installed: `flmjax-train`)."""

from flmjax.cli.train import main

if __name__ == "__main__":
    raise SystemExit(main())
