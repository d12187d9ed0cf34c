#!/usr/bin/env bash
# Install everything the test suite needs (runtime + PyTorch references) into .venv and run it.
# Extra arguments go to pytest (e.g. `scripts/test.sh -m "not slow"`).
set -euo pipefail
cd "$(dirname "$0")/.."
# The browser test drives Debian's Chromium headless, the evaluation tests speak with espeak-ng and the
# HTTPS test makes a certificate with openssl; install them when missing and we may (root).
missing=""
command -v chromium >/dev/null || missing="$missing chromium"
command -v espeak-ng >/dev/null || missing="$missing espeak-ng"
command -v openssl >/dev/null || missing="$missing openssl"
if [ -n "$missing" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --disable-pip-version-check -r requirements-test.txt -e .
# moshi (kyutai's PyTorch reference) pins old numpy/torch/transformers: take it without its pins.
python -m pip install -q --disable-pip-version-check --no-deps moshi==0.2.13
# Silero VAD's wheel ships the ONNX model flmjax runs; its torch dependency is not needed at run time.
python -m pip install -q --disable-pip-version-check --no-deps silero-vad==6.2.3
# The tree stays linted and formatted (settings in pyproject.toml): cheap, so before the long tests.
ruff check .
ruff format --check .
# Types (settings in pyproject.toml: the package): about a minute with a cold cache, as in CI.
mypy
# The installed package: a wheel built, installed into a fresh venv and trained from outside the checkout on
# its packaged demo corpus (~10 s to build and install, ~1.5 min for the first stage's preparation and 2 steps).
scripts/check_wheel.sh
python -m pytest "$@"
