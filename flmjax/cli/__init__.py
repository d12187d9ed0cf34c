"""Command-line programs: `flmjax/cli/<name>.py` exposes `main(argv) -> int`; `launch/<name>.py` wraps it."""
