"""Compile the train step or the decode frame program ahead of time (see flmjax/cli/aot.py and README.md)."""

from flmjax.cli.aot import main

if __name__ == "__main__":
    raise SystemExit(main())
