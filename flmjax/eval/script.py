"""Scripted users: the `conversation --script S.json` format, checked, and rendered to a 24 kHz track.

    {"duration_s": 20.0,
     "user": [{"start": 0.5, "text": "What is two plus three?", "voice": "en-us", "kind": "turn",
               "answer": "five"},
              {"start": 6.0, "audio": "clip.wav", "kind": "barge_in"}, ...],
     "seed": 0}

Each user event is speech placed at `start` seconds: an audio file (relative to the script's folder;
mixed to mono and resampled to 24 kHz, which is reported) or `text` spoken by espeak-ng (`voice`, default
"en-us"; `speed` in words per minute, default espeak's 175), leading and trailing silence trimmed so the
event's speech spans exactly [start, start + its length]. Kinds say what the model should do:
`turn` (the user has finished: reply), `hesitation` (a pause inside the user's turn follows: no reply
yet), `barge_in` (the user talks over the model: stop), `backchannel` (a short "mm-hm": keep talking).
Optional per event: `answer` (a string or a list of accepted strings; turns only) checked against the
model's monologue after the turn. Optional top level: `seed` (sampling), `name` (default: the file stem).
Events may overlap each other (their audio is mixed).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from flmjax import audio
from flmjax.eval import EvalError, read_json

KINDS = ("turn", "hesitation", "barge_in", "backchannel")
SAMPLE_RATE = 24_000


@dataclasses.dataclass(frozen=True)
class UserEvent:
    index: int
    kind: str
    start: float
    text: str | None = None
    audio: Path | None = None
    voice: str = "en-us"
    speed: int | None = None
    answer: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Script:
    name: str
    path: Path
    duration_s: float
    events: tuple[UserEvent, ...]
    seed: int = 0


def _number(value, where: str, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        raise EvalError(f"{where} must be a number >= {minimum}, got {value!r}")
    return float(value)


def parse_script(path: str | Path) -> Script:
    """Read and check a script file; every problem is one line naming the file and the field."""
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, dict):
        raise EvalError(f"{path}: expected an object with 'duration_s' and 'user'")
    duration = _number(data.get("duration_s"), f"{path}: duration_s", minimum=0.08)
    users = data.get("user")
    if not isinstance(users, list) or not users:
        raise EvalError(f"{path}: 'user' must be a non-empty list of events")
    events = []
    for i, e in enumerate(users):
        where = f"{path}: user[{i}]"
        if not isinstance(e, dict):
            raise EvalError(f"{where} must be an object")
        unknown = set(e) - {"start", "text", "audio", "voice", "speed", "kind", "answer"}
        if unknown:
            raise EvalError(f"{where} has unknown fields {sorted(unknown)}")
        kind = e.get("kind", "turn")
        if kind not in KINDS:
            raise EvalError(f"{where}.kind {kind!r} is not one of {', '.join(KINDS)}")
        if ("text" in e) == ("audio" in e):
            raise EvalError(f"{where} needs exactly one of 'text' or 'audio'")
        if "text" in e and (not isinstance(e["text"], str) or not e["text"].strip()):
            raise EvalError(f"{where}.text must be a non-empty string")
        answer = e.get("answer", ())
        answer = (answer,) if isinstance(answer, str) else tuple(answer)
        if not all(isinstance(a, str) and a.strip() for a in answer):
            raise EvalError(f"{where}.answer must be a string or a list of non-empty strings")
        if answer and kind != "turn":
            raise EvalError(f"{where}.answer is only checked after a 'turn'")
        speed = e.get("speed")
        events.append(
            UserEvent(
                index=i,
                kind=kind,
                start=_number(e.get("start"), f"{where}.start"),
                text=e.get("text"),
                audio=(path.parent / e["audio"]) if "audio" in e else None,
                voice=str(e.get("voice", "en-us")),
                speed=None if speed is None else int(_number(speed, f"{where}.speed", minimum=80)),
                answer=answer,
            )
        )
        if events[-1].start >= duration:
            raise EvalError(f"{where}.start {events[-1].start} is not before duration_s {duration}")
    seed = data.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise EvalError(f"{path}: seed must be an integer")
    events.sort(key=lambda ev: (ev.start, ev.index))
    return Script(str(data.get("name", path.stem)), path, duration, tuple(events), seed)


def speak(text: str, voice: str = "en-us", speed: int | None = None) -> np.ndarray:
    """espeak-ng -> float32 mono at 24 kHz, leading and trailing silence trimmed (`flmjax.audio.espeak`)."""
    try:
        return audio.espeak(text, voice, speed)
    except audio.AudioError as e:
        raise EvalError(str(e)) from None


def event_audio(event: UserEvent, notes: list[str]) -> np.ndarray:
    """The speech of one event at 24 kHz mono; a resampled file is reported in `notes`."""
    if event.text is not None:
        return speak(event.text, event.voice, event.speed)
    assert event.audio is not None  # parse_script gives every event text or audio
    pcm, rate = audio.load_audio(event.audio)
    if rate != SAMPLE_RATE:
        notes.append(f"{event.audio}: resampled from {rate} Hz to {SAMPLE_RATE} Hz")
    mono = audio.resample(audio.to_mono(pcm), rate, SAMPLE_RATE)[0]
    if not np.any(mono):
        raise EvalError(f"{event.audio}: the audio is silent")
    return mono


@dataclasses.dataclass(frozen=True)
class RenderedEvent:
    event: UserEvent
    end: float  # seconds: start + the length of its speech


def render(script: Script, notes: list[str] | None = None) -> tuple[np.ndarray, list[RenderedEvent]]:
    """The user's track (float32 [duration_s * 24 kHz]) and each event's speech span."""
    notes = [] if notes is None else notes
    n = int(round(script.duration_s * SAMPLE_RATE))
    track = np.zeros(n, np.float32)
    spans = []
    for event in script.events:
        clip = event_audio(event, notes)
        first = int(round(event.start * SAMPLE_RATE))
        if first + len(clip) > n:
            end = (first + len(clip)) / SAMPLE_RATE
            raise EvalError(
                f"{script.path}: user[{event.index}] ends at {end:.2f} s, after duration_s {script.duration_s}"
            )
        track[first : first + len(clip)] += clip
        spans.append(RenderedEvent(event, (first + len(clip)) / SAMPLE_RATE))
    return np.clip(track, -1.0, 1.0), spans
