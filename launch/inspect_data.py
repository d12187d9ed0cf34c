"""Show sample N of a stage's data as a timeline or JSON
(see flmjax/cli/inspect_data.py; installed: `flmjax-inspect-data`)."""

from flmjax.cli.inspect_data import main

if __name__ == "__main__":
    raise SystemExit(main())
