"""Prepare a corpus for training: audio to Mimi codes, text to ids, ArrayRecord shards
(see flmjax/cli/prepare_data.py; installed: `flmjax-prepare-data`)."""

from flmjax.cli.prepare_data import main

if __name__ == "__main__":
    raise SystemExit(main())
