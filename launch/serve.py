"""Serve FLM-Audio over the release's websocket protocol
(see flmjax/cli/serve.py; installed: `flmjax-serve`)."""

from flmjax.cli.serve import main

if __name__ == "__main__":
    raise SystemExit(main())
