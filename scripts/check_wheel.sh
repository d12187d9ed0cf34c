#!/usr/bin/env bash
# The package as a user installs it: build the wheel, install it into a fresh venv and, from a folder outside
# the checkout, train the demo's first stage (post1) for 2 steps through the installed `flmjax-train`: the
# packaged demo corpus (flmjax/data/demo, importlib.resources) prepared on first use into a cache of this
# run's own, two train steps, a checkpoint. Exits non-zero on any failure. Run by scripts/test.sh.
#   scripts/check_wheel.sh [PYTHON]    (default: python, the running venv's, which has the dependencies)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
python="${1:-python}"
tmp="$(mktemp -d "${TMPDIR:-/tmp}/flmjax-wheel.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
started=$SECONDS

# Build from a copy of the files git knows (tracked + untracked, not ignored): setuptools builds in-tree, and
# a build/lib left in the checkout by an earlier build would hand the wheel files the tree no longer has.
mkdir "$tmp/src"
if git -C "$repo" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  (cd "$repo" && git ls-files -z --cached --others --exclude-standard | xargs -0 cp -P --parents -t "$tmp/src")
else
  tar -C "$repo" --exclude=./.venv --exclude=./build --exclude='*.egg-info' --exclude=./runs -cf - . | tar -C "$tmp/src" -xf -
fi
"$python" -m pip wheel -q --disable-pip-version-check --no-deps --no-build-isolation -w "$tmp/dist" "$tmp/src"
wheel="$(ls "$tmp"/dist/flmjax-*.whl)"
built=$SECONDS
# Every file of the demo corpus is in the wheel (package data, pyproject.toml).
demo_files="$(cd "$tmp/src" && find flmjax/data/demo -type f | sort)"
in_wheel="$("$python" -c 'import sys, zipfile; print("\n".join(sorted(n for n in zipfile.ZipFile(sys.argv[1]).namelist()
                        if n.startswith("flmjax/data/demo/"))))' "$wheel")"
[ "$demo_files" = "$in_wheel" ] || {
  echo "check_wheel: $wheel lacks demo corpus files: $(comm -23 <(echo "$demo_files") <(echo "$in_wheel") | xargs)" >&2
  exit 1; }

# A fresh venv that sees the dependencies without installing them again (no network, and minutes of jax/torch):
# --system-site-packages reaches the base interpreter's packages, and a .pth line adds the running
# interpreter's own site-packages (a venv's, where the dependencies are). A path in a .pth is only appended to
# sys.path, its own .pth files are not run: the checkout's editable flmjax there (its finder is one) stays off,
# and the wheel's copy in the new venv's site-packages comes first on sys.path (checked below).
"$python" -m venv --system-site-packages "$tmp/venv"
deps="$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
site="$("$tmp/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "$deps" >"$site/flmjax-check-deps.pth"
"$tmp/venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps --force-reinstall "$wheel"
installed=$SECONDS

# Outside the checkout, with nothing of it on sys.path (no PYTHONPATH), and a data cache of this run's own.
mkdir "$tmp/run"
cd "$tmp/run"
unset PYTHONPATH
export FLMJAX_DATA_CACHE="$tmp/cache"
where="$("$tmp/venv/bin/python" -c 'import flmjax; print(flmjax.__file__)')"
case "$where" in
  "$site"/flmjax/*) ;;
  *) echo "check_wheel: flmjax imports from $where, not from the wheel in $site" >&2; exit 1 ;;
esac
# The demo's first stage alone, without its held-out set (20 s more to prepare): a config file of this
# folder's (`--config=FILE.py`) naming demo's post1.
cat >first_stage.py <<'PY'
import dataclasses

from flmjax.configs import demo


def config():
    return dataclasses.replace(demo.config()[0], eval_data=None)
PY
"$tmp/venv/bin/flmjax-train" --config=first_stage.py --steps=2 --data.global_batch=2 --log.eval_batches=0 \
  --log.tensorboard=false >"$tmp/train.log" 2>&1 || { tail -n 40 "$tmp/train.log" >&2; exit 1; }
grep -q "^post1: steps 2/2" "$tmp/train.log" || { tail -n 40 "$tmp/train.log" >&2; exit 1; }
ls -d runs/demo/post1/checkpoints/* >/dev/null 2>&1 || {
  echo "check_wheel: no checkpoint in runs/demo/post1/checkpoints" >&2; exit 1; }
ls -d "$FLMJAX_DATA_CACHE"/demo_speech_auto-* >/dev/null 2>&1 || {
  echo "check_wheel: the demo corpus was not prepared into $FLMJAX_DATA_CACHE" >&2; exit 1; }
echo "check_wheel: $(basename "$wheel") from $where: built in $((built - started)) s, installed in" \
  "$((installed - built)) s, post1 prepared + 2 steps + checkpoint in $((SECONDS - installed)) s"
grep "^post1: steps" "$tmp/train.log"
