"""Measuring a full-duplex model (../shared/spec/evaluation.md): recognition and turn-taking metrics,
Full-Duplex-Bench and BayLing-Duplex timing, voice activity (Silero VAD, Mimi codes), scripted
conversations and their pictures.

Metrics are pure functions of numpy arrays and plain lists; runners and the CLI (`flmjax/cli/evaluate.py`)
do the file and model work around them.
"""

import json
import os
from typing import Any

from flmjax.errors import FlmjaxError


class EvalError(FlmjaxError):
    """Evaluation input that cannot be used (a missing or malformed file, an empty track), in one line."""


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file's content; a missing or malformed file is an `EvalError` naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise EvalError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EvalError(f"{path}: not valid JSON ({e})") from None
