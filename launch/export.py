"""Export a trainer checkpoint in the release's HF layout (see flmjax/cli/export.py; installed: `flmjax-export`)."""

from flmjax.cli.export import main

if __name__ == "__main__":
    raise SystemExit(main())
