"""BayLing-Duplex timing metrics (InstructS2S-Eval): TT SR@3s, ISR@2s and the overlap after a barge-in.

From voice activity of the assistant: a turn's latency is the assistant's reply start - the right edge
of the user's speech; **TT SR@3s** is the fraction of turns whose reply starts within 3 s (a turn with
no reply fails). After a barge-in starting at t, the assistant's stop time is the right edge of its
speech in progress at t; **overlap** = stop - t (mean over barge-ins), **ISR@2s** the fraction with an
overlap of at most 2 s. Barge-ins that find the assistant silent interrupt nothing and are left out.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

TT_WINDOW_S = 3.0
ISR_WINDOW_S = 2.0

Segment = tuple[float, float]


def speaking_at(segments: Sequence[Segment], t: float) -> Segment | None:
    """The segment in progress at time t (start <= t < end), if any."""
    return next(((s, e) for s, e in segments if s <= t < e), None)


def stop_overlap(model_segments: Sequence[Segment], barge_in_start: float) -> float | None:
    """Seconds from a barge-in's start to the end of the assistant speech it interrupts (None: silent)."""
    seg = speaking_at(model_segments, barge_in_start)
    return None if seg is None else seg[1] - barge_in_start


def summary(latencies: Sequence[float | None], overlaps: Sequence[float | None]) -> dict[str, float | None]:
    """{"tt_sr_3s", "isr_2s", "overlap_s"}; latencies None = no reply (a failure), overlaps None = no
    assistant speech to interrupt (left out). Each is null when it has nothing to average."""
    applicable = [o for o in overlaps if o is not None]
    return {
        "tt_sr_3s": float(np.mean([x is not None and x <= TT_WINDOW_S for x in latencies])) if latencies else None,
        "isr_2s": float(np.mean([o <= ISR_WINDOW_S for o in applicable])) if applicable else None,
        "overlap_s": float(np.mean(applicable)) if applicable else None,
    }
