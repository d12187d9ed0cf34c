"""Audio and Full-Duplex-Bench folders built at known times, shared by the evaluation tests (and by the
parity run of the benchmark's own scripts recorded in the issue-9 note)."""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile

from flmjax import audio
from flmjax.eval.script import speak

SHARED = Path(__file__).resolve().parents[1] / "shared" / "full-duplex-bench"


@functools.cache
def speech(text: str, voice: str = "en-us", rate: int = 16_000) -> np.ndarray:
    """espeak-ng speech, trimmed, at `rate` (cached: synthesis costs a subprocess)."""
    return audio.resample(speak(text, voice)[None], 24_000, rate)[0]


def place(duration_s: float, clips: list[tuple[float, np.ndarray]], rate: int = 16_000) -> np.ndarray:
    """A track of `duration_s` with each (start_s, clip) added at its place."""
    track = np.zeros(int(round(duration_s * rate)), np.float32)
    for start, clip in clips:
        i = int(round(start * rate))
        track[i : i + len(clip)] += clip[: len(track) - i]
    return track


def write_wav(path: Path, pcm: np.ndarray, rate: int = 16_000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, np.clip(pcm, -1, 1), rate, subtype="PCM_16")


def _chunks(spans: Sequence[tuple[float, float | None]]) -> dict:
    words = [f"w{i}" for i in range(len(spans))]
    return {"text": " ".join(words), "chunks": [{"text": w, "timestamp": [s, e]} for w, (s, e) in zip(words, spans)]}


def _write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")


# Output words (start, end) relative to the reference time (the user's turn or interruption end) and
# what the benchmark's rules make of them: (TOR, latency or None).
TURN_CASES = {
    "1": ([], (0, None)),  # said nothing
    "2": ([(1.0, 1.2), (1.2, 1.4), (1.4, 1.5)], (0, None)),  # 3 words in 0.5 s: no turn
    "3": ([(0.5, 0.6), (0.6, 0.8), (0.8, 0.9), (0.9, 1.1)], (1, 0.5)),  # 4 words in 0.6 s: a turn
    "4": ([(1.25, 1.5), (2.0, 2.25)], (1, 1.25)),  # 2 words spanning exactly 1 s: a turn
    "5": ([(-0.5, -0.25), (-0.25, 0.0), (0.0, 0.5), (0.5, 0.75), (0.75, 1.0)], (1, 0.0)),  # early: clipped to 0
}
TURN_REFERENCE_S = 2.0
# Pause handling only (the other scripts cannot read a null end time): the span ends at the last start.
PAUSE_EXTRA = {
    "6": ([(1.0, 1.25), (1.5, None)], 0),  # span 0.5 s, 2 words
    "7": ([(1.0, 1.25), (2.25, None)], 1),  # span 1.25 s
}
RATINGS = {"3": 4, "4": 2, "5": 5}  # user_interruption judge ratings of the samples that take the turn


def turn_task_dirs(root: Path) -> dict[str, Path]:
    """smooth_turn_taking, pause_handling and user_interruption folders covering every branch of the rules."""
    dirs = {t: root / t for t in ("smooth_turn_taking", "pause_handling", "user_interruption")}
    for name, (spans, _) in TURN_CASES.items():
        shifted = [(s + TURN_REFERENCE_S, e + TURN_REFERENCE_S) for s, e in spans]
        for task in dirs:
            _write_json(dirs[task] / name / "output.json", _chunks(shifted))
        _write_json(dirs["smooth_turn_taking"] / name / "turn_taking.json",
                    [{"text": "[TURN-TAKING]", "timestamp": [TURN_REFERENCE_S, TURN_REFERENCE_S + 0.4]}])  # fmt: skip
        interrupt = {"context": "Tell me about books.", "interrupt": f"Fiction instead. (rate {RATINGS.get(name, 0)})",
                     "timestamp": [TURN_REFERENCE_S - 1.5, TURN_REFERENCE_S]}  # fmt: skip
        _write_json(dirs["user_interruption"] / name / "interrupt.json", [interrupt])
        if name in RATINGS:
            _write_json(dirs["user_interruption"] / name / "rating.json", {"analysis": "-", "rating": RATINGS[name]})
        _write_json(dirs["pause_handling"] / name / "pause.json", [{"text": "[PAUSE]", "timestamp": [1.0, 2.0]}])
    for name, (pause_spans, _) in PAUSE_EXTRA.items():
        _write_json(dirs["pause_handling"] / name / "output.json", _chunks(pause_spans))
    return dirs


# Backchannel samples (names are keys of the benchmark's ground-truth file): the output's speech at known
# places, the words of output.json, and the TOR the rules give.
BACKCHANNEL_CASES: dict[str, tuple[list[tuple[float, str]], list[tuple[float, float | None]], int]] = {
    "0": ([], [], 0),  # silent output: no candidate, JSD 1
    "1": ([(2.0, "yeah")], [(2.0, 2.3), (6.0, None)], 0),  # one short backchannel; a null end far away
    "2": ([(1.0, "one two three"), (5.0, "okay")], [(1.0, 1.3), (1.3, 1.6), (1.6, 1.9), (5.0, 5.3)], 0),
    "3": ([(1.0, "right"), (3.0, "The birch canoe slid on the smooth planks and the juice made fine punch.")],
          [(1.0, 1.3), (3.0, 3.5)], 1),  # a long segment after a backchannel: a turn
    "4": ([(1.0, "I see what you mean there")], [(1.0, 1.5), (1.6, 2.0)], 1),  # over 1 s, 2 words
    "5": ([(1.0, "a b c d e")], [(1.0, 1.1), (1.1, 1.2), (1.2, 1.3), (1.3, 1.4), (1.4, 1.5)], 1),  # 5 words
}  # fmt: skip
BACKCHANNEL_DURATION_S = 10.0


def backchannel_dirs(root: Path) -> Path:
    for name, (said, words, _) in BACKCHANNEL_CASES.items():
        track = place(BACKCHANNEL_DURATION_S, [(t, speech(text, "en-us+f3")) for t, text in said])
        write_wav(root / name / "output.wav", track)
        write_wav(root / name / "input.wav", np.zeros_like(track))
        _write_json(root / name / "output.json", _chunks(words))
    return root


def timing_dirs(root: Path) -> Path:
    """v1.5 latency intervals: a user who pauses 0.4 s (merged) and talks over the model, a model reply
    split by a short silence (merged), and a sample where the model never speaks."""
    user = place(9.0, [(0.5, speech("What should I cook")), (2.3, speech("tonight?")),
                       (5.2, speech("No, wait, not pasta."))])  # fmt: skip
    model = place(9.0, [(3.4, speech("How about pasta with", "en-us+f3")), (5.0, speech("tomato sauce?", "en-us+f3"))])
    write_wav(root / "1" / "input.wav", user)
    write_wav(root / "1" / "output.wav", model)
    write_wav(root / "2" / "input.wav", user)
    write_wav(root / "2" / "output.wav", np.zeros_like(model))
    return root
