"""Talk to a trained model offline: a recording in, the reply out
(see flmjax/cli/infer.py; installed: `flmjax-infer`)."""

from flmjax.cli.infer import main

if __name__ == "__main__":
    raise SystemExit(main())
