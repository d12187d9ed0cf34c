"""Turn-taking statistics of a two-channel conversation (dGSLM convention, FLM-Audio Table 6).

- IPU (inter-pausal unit): a channel's speech with no silence of `IPU_SILENCE_S` (200 ms) or more inside;
  shorter silences are filled.
- On the two-channel timeline: an **overlap** is a stretch where both channels speak; a **silence** is a
  stretch where neither does, ignored at the very start and end. A silence is a **pause** when a speaker
  who speaks right before it also speaks right after it, a **gap** when the speaker changes.
- Reported per minute of conversation: the count and the seconds of each; the deviation of two
  conversations (ΔPause, ΔGap, ΔOverlap) is |a - b| of the seconds per minute.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from flmjax.eval import EvalError

IPU_SILENCE_S = 0.2
CHANNELS = ("user", "model")
KINDS = ("pause", "gap", "overlap")

Segment = tuple[float, float]


def ipus(segments: Sequence[Segment], min_silence_s: float = IPU_SILENCE_S) -> list[Segment]:
    """Speech segments (any order, may touch or overlap) -> IPUs: silences shorter than `min_silence_s` filled."""
    merged: list[list[float]] = []
    for s, e in sorted((float(s), float(e)) for s, e in segments if e > s):
        if merged and s - merged[-1][1] < min_silence_s:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    return [(s, e) for s, e in merged]


def _runs(user: Sequence[Segment], model: Sequence[Segment]) -> list[tuple[float, float, bool, bool]]:
    """The timeline cut where either channel starts or stops: (start, end, user speaks, model speaks)."""
    cuts = sorted({t for seg in (*user, *model) for t in seg})

    def speaks(segs, t):
        return any(s <= t < e for s, e in segs)

    runs: list[tuple[float, float, bool, bool]] = []
    for a, b in zip(cuts, cuts[1:]):
        state = (speaks(user, (a + b) / 2), speaks(model, (a + b) / 2))
        if runs and runs[-1][2:] == state:
            runs[-1] = (runs[-1][0], b, *state)
        else:
            runs.append((a, b, *state))
    return runs


def events(user_ipus: Sequence[Segment], model_ipus: Sequence[Segment]) -> dict[str, list[dict]]:
    """IPUs of both channels -> {"pause": [...], "gap": [...], "overlap": [...]}, each a list of
    {"start", "end"} (pauses add "speaker", gaps "from" and "to")."""
    runs = _runs(user_ipus, model_ipus)
    out: dict[str, list[dict]] = {k: [] for k in KINDS}
    for i, (a, b, u, m) in enumerate(runs):
        if u and m:
            out["overlap"].append({"start": a, "end": b})
        elif not u and not m and 0 < i < len(runs) - 1:
            before = {c for c, on in zip(CHANNELS, runs[i - 1][2:]) if on}
            after = {c for c, on in zip(CHANNELS, runs[i + 1][2:]) if on}
            if before & after:
                out["pause"].append({"start": a, "end": b, "speaker": sorted(before & after)[0]})
            else:
                out["gap"].append({"start": a, "end": b, "from": sorted(before)[0], "to": sorted(after)[0]})
    return out


def per_minute(found: dict[str, list[dict]], duration_s: float) -> dict[str, dict[str, float]]:
    """{"pause"|"gap"|"overlap": {"count", "seconds"}} per minute of a `duration_s` conversation."""
    if duration_s <= 0:
        raise EvalError(f"a conversation of {duration_s} s has no per-minute rates")
    minutes = duration_s / 60
    return {
        k: {
            "count": len(found[k]) / minutes,
            "seconds": float(sum(e["end"] - e["start"] for e in found[k])) / minutes,
        }
        for k in KINDS
    }


def deviation(a: dict[str, dict[str, float]], b: dict[str, dict[str, float]]) -> dict[str, float]:
    """ΔPause, ΔGap, ΔOverlap: |a - b| of the seconds per minute of two `per_minute` results."""
    return {k: abs(a[k]["seconds"] - b[k]["seconds"]) for k in KINDS}


def timing(user_segments: Sequence[Segment], model_segments: Sequence[Segment], duration_s: float) -> dict:
    """The `timing --json` report: {"duration_s", "ipus": {"user", "model"}, "per_minute", "events"}."""
    user, model = ipus(user_segments), ipus(model_segments)
    found = events(user, model)
    return {
        "duration_s": float(duration_s),
        "ipus": {"user": [list(s) for s in user], "model": [list(s) for s in model]},
        "per_minute": per_minute(found, duration_s),
        "events": found,
    }


def frames_to_segments(active: np.ndarray, frame_s: float) -> list[Segment]:
    """A boolean per frame -> the runs of True as (start_s, end_s)."""
    active = np.asarray(active, bool)
    edges = np.flatnonzero(np.diff(np.concatenate([[False], active, [False]]).astype(np.int8)))
    return [(float(s * frame_s), float(e * frame_s)) for s, e in zip(edges[::2], edges[1::2])]
