"""Scripted conversations with a model: user tracks streamed frame by frame through one `Session` batch
(one row per conversation, rows resting once their track ends), then measured.

Voice activity comes from Mimi codes (`codes`: the user's listen codes and the model's speak codes
against Mimi's encoding of silence; works with any codec, random weights included) or from Silero VAD
on the waveforms (`vad`: the user's track and the decoded reply; needs a real codec to mean anything).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from tqdm import tqdm

from flmjax.eval import EvalError, monologue, scoring, turntaking
from flmjax.eval import vad as silero
from flmjax.eval.activity import CodesActivity
from flmjax.eval.script import RenderedEvent, Script, render
from flmjax.infer.sampling import SamplingSettings
from flmjax.infer.session import Session

ACTIVITY = ("codes", "vad")


@dataclasses.dataclass
class Streamed:
    """One track after the model heard it: the reply (same length), per output frame the monologue piece,
    the 8 speak codes (None where the frame has no output: the first) and the user's codes."""

    user: np.ndarray  # float32 [N] at 24 kHz
    reply: np.ndarray  # float32 [N]
    pieces: list[str]  # [F]
    speak_codes: list[np.ndarray | None]  # [F] of int [8]
    user_codes: np.ndarray  # int [F, 8]


def stream(
    session: Session,
    tracks: Sequence[np.ndarray],
    settings: Sequence[SamplingSettings] | None = None,
    progress: str | None = None,
) -> list[Streamed]:
    """Play 24 kHz mono tracks (at most `session.batch_size`, any lengths) to the model together, frame by
    frame; row r rests once track r has ended. Every row is reset first (row r < len(tracks) with
    settings[r] when given)."""
    if not 0 < len(tracks) <= session.batch_size:
        raise ValueError(f"{len(tracks)} tracks for a session of batch {session.batch_size}")
    size, rows = session.frame_size, session.batch_size
    frames = [-(-len(t) // size) for t in tracks]
    padded = np.zeros((rows, max(frames) * size), np.float32)
    for r, t in enumerate(tracks):
        padded[r, : len(t)] = t
    session.reset({r: settings[r] if settings and r < len(settings) else session.settings[r] for r in range(rows)})
    out = [
        Streamed(t, np.zeros(len(t), np.float32), [], [], np.zeros((f, 8), np.int64)) for t, f in zip(tracks, frames)
    ]
    replies = np.zeros_like(padded)
    for k in tqdm(range(max(frames)), desc=progress, unit="frame", disable=progress is None, leave=False):
        active = np.array([k < frames[r] if r < len(tracks) else False for r in range(rows)])
        result = session.step(padded[:, k * size : (k + 1) * size], active)
        replies[:, k * size : (k + 1) * size] = result.pcm
        for r, s in enumerate(out):
            if active[r]:
                s.pieces.append(result.text[r])
                s.speak_codes.append(result.tokens[r, 1:].copy() if result.valid[r] else None)
                s.user_codes[k] = result.user_codes[r]
    for r, s in enumerate(out):
        s.reply = replies[r, : len(s.user)].copy()
    return out


def activity_segments(
    streamed: Streamed, kind: str, detector: CodesActivity | None, sample_rate: int, frame_s: float
) -> tuple[list, list]:
    """(user, model) speech segments in seconds, from codes or from Silero VAD."""
    if kind == "codes":
        if detector is None:
            raise ValueError("codes-level activity needs a CodesActivity")
        silent = detector.silence[-1]
        speak = np.stack([silent if c is None else c for c in streamed.speak_codes])
        return (
            turntaking.frames_to_segments(detector.speech(streamed.user_codes), frame_s),
            turntaking.frames_to_segments(detector.speech(speak), frame_s),
        )
    if kind == "vad":
        user, model = silero.speech_seconds(np.stack([streamed.user, streamed.reply]), sample_rate)
        return user, model
    raise EvalError(f"unknown activity detector {kind!r}; known: {', '.join(ACTIVITY)}")


def measure(
    script: Script, spans: Sequence[RenderedEvent], streamed: Streamed, user: list, model: list, frame_s: float
) -> dict:
    """Every metric of one conversation (the `metrics.json` of `conversation`)."""
    report = turntaking.timing(user, model, script.duration_s)
    scored = scoring.score(spans, report["ipus"]["model"], streamed.pieces, script.duration_s)
    return {
        "name": script.name,
        "script": str(script.path),
        **report,
        **scored,
        "monologue": monologue.utterances(streamed.pieces, frame_s),
    }


# Scalar metrics averaged over conversations by `mean_metrics` (paths into metrics.json).
MEAN_KEYS = (
    ("turn_taking", "success_rate"),
    ("turn_taking", "latency_s"),
    ("turn_taking", "false_starts"),
    ("barge_in", "success_rate"),
    ("barge_in", "stop_latency_s"),
    ("barge_in", "response_latency_s"),
    ("hesitation", "hold_rate"),
    ("backchannel", "continue_rate"),
    ("answers", "accuracy"),
    ("bayling", "tt_sr_3s"),
    ("bayling", "isr_2s"),
    ("bayling", "overlap_s"),
    *(("per_minute", k, q) for k in turntaking.KINDS for q in ("count", "seconds")),
)
# Counts summed by `mean_metrics` into pooled rates (events of all conversations together).
POOLED = {
    ("turn_taking", "success_rate"): (("turn_taking", "successes"), ("turn_taking", "turns")),
    ("barge_in", "success_rate"): (("barge_in", "successes"), ("barge_in", "applicable")),
    ("hesitation", "hold_rate"): (("hesitation", "held"), ("hesitation", "count")),
    ("backchannel", "continue_rate"): (("backchannel", "continued"), ("backchannel", "applicable")),
    ("answers", "accuracy"): (("answers", "correct"), ("answers", "count")),
}


def _get(d: dict, path: Sequence[str]):
    for p in path:
        d = d[p]
    return d


def mean_metrics(results: Sequence[dict]) -> dict:
    """{"conversations", "mean": {...} (each metric's mean over the conversations where it is not null,
    null when none), "pooled": {...} (rates over all events together)}."""
    mean: dict = {}
    for path in MEAN_KEYS:
        values = [v for v in (_get(r, path) for r in results) if v is not None]
        node = mean
        for p in path[:-1]:
            node = node.setdefault(p, {})
        node[path[-1]] = float(np.mean(values)) if values else None
    pooled: dict = {}
    for (section, key), (hits, total) in POOLED.items():
        h, n = sum(_get(r, hits) for r in results), sum(_get(r, total) for r in results)
        pooled.setdefault(section, {})[key] = h / n if n else None
        pooled[section][total[1]] = n
    pooled["turn_taking"]["false_starts"] = sum(r["turn_taking"]["false_starts"] for r in results)
    return {"conversations": len(results), "mean": mean, "pooled": pooled}


def run_scripts(
    session: Session,
    scripts: Sequence[Script],
    settings: SamplingSettings,
    activity: str = "codes",
    detector: CodesActivity | None = None,
    notes: list[str] | None = None,
    progress: str | None = None,
) -> list[tuple[dict, Streamed]]:
    """Render, stream (in batches of the session's size; each script sampled with `settings` seeded by its
    `seed`) and measure scripts -> per script (metrics, streamed tracks)."""
    if activity not in ACTIVITY:
        raise EvalError(f"unknown activity detector {activity!r}; known: {', '.join(ACTIVITY)}")
    rendered = [render(s, notes) for s in scripts]
    frame_s = session.frame_size / session.sample_rate
    out = []
    for first in range(0, len(scripts), session.batch_size):
        batch = range(first, min(first + session.batch_size, len(scripts)))
        seeded = [dataclasses.replace(settings, seed=scripts[i].seed) for i in batch]
        streamed = stream(session, [rendered[i][0] for i in batch], seeded, progress)
        for i, s in zip(batch, streamed):
            user, model = activity_segments(s, activity, detector, session.sample_rate, frame_s)
            metrics = measure(scripts[i], rendered[i][1], s, user, model, frame_s)
            metrics["activity"] = activity
            out.append((metrics, s))
    return out
