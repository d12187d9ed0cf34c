"""How a model handled a scripted user: per-event outcomes and per-conversation rates.

Inputs are the script's events with their speech spans, the model's IPUs (seconds) and its monologue
pieces per frame. The rules (times in seconds):

- The **reply** to a user utterance [s, e] is the first model IPU that starts at or after s, ends after
  e and starts before the next user event that is not a backchannel (or the end); its latency is
  max(0, start - e). A model already talking when the user began does not reply by talking on.
- `turn`: success when the reply's latency is <= 1.5 s (`turn_taking.success_rate`; `latency_s` is the
  mean over turns with a reply). `hesitation`: held when no model IPU starts between its start and the
  next user event (`hesitation.hold_rate`).
- **False starts**: model IPUs starting while the user holds the floor: during a turn's speech, or from a
  hesitation's start to the next user event.
- `barge_in`: applicable when the model is speaking at its start; stop latency = end of that model IPU
  - the barge-in's start; success when <= 1 s (`barge_in.success_rate`, `stop_latency_s` the mean).
  The reply after it (as above) gives `response_latency_s`.
- `backchannel`: applicable when the model is speaking at its start; continued when that IPU lasts
  past the backchannel's end (`backchannel.continue_rate`).
- `answer` on a turn: correct when an accepted answer appears (normalised, at word boundaries) in the
  monologue written from the turn's end to the next user event that is not a backchannel.
- BayLing-Duplex: TT SR@3s over turns (reply latency <= 3 s), ISR@2s and the overlap over barge-ins.
Rates are null when nothing applies; the counts next to them let several conversations be pooled.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from flmjax.eval import bayling
from flmjax.eval.monologue import text_between
from flmjax.eval.recognition import contains_answer
from flmjax.eval.script import RenderedEvent

REPLY_WINDOW_S = 1.5
STOP_WINDOW_S = 1.0

Segment = tuple[float, float]


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def _rate(hits: int, n: int) -> float | None:
    return hits / n if n else None


def _next_boundary(spans: Sequence[RenderedEvent], i: int, duration_s: float) -> float:
    """The start of the next user event after spans[i] that is not a backchannel, or the end."""
    return next((s.event.start for s in spans[i + 1 :] if s.event.kind != "backchannel"), duration_s)


def reply(model: Sequence[Segment], start: float, end: float, before: float) -> Segment | None:
    """The model's reply to a user utterance [start, end] (see the module docstring)."""
    return next(((s, e) for s, e in model if s >= start and e > end and s < before), None)


def score(
    spans: Sequence[RenderedEvent], model_ipus: Sequence[Segment], pieces: Sequence[str], duration_s: float
) -> dict:
    """Per-event outcomes and the conversation's rates (keys: turn_taking, barge_in, hesitation,
    backchannel, answers, bayling, user_events)."""
    spans = sorted(spans, key=lambda s: (s.event.start, s.event.index))
    model = sorted(model_ipus)
    onsets = [s for s, _ in model]
    rows, false_starts = [], 0
    for i, span in enumerate(spans):
        ev, boundary = span.event, _next_boundary(spans, i, duration_s)
        row: dict = {"index": ev.index, "kind": ev.kind, "start_s": ev.start, "end_s": span.end, "text": ev.text}
        if ev.kind in ("turn", "barge_in"):
            r = reply(model, ev.start, span.end, boundary)
            row["reply_start_s"] = r[0] if r else None
            row["latency_s"] = max(0.0, r[0] - span.end) if r else None
        if ev.kind == "turn":
            row["success"] = row["latency_s"] is not None and row["latency_s"] <= REPLY_WINDOW_S
            floor = (ev.start, span.end)
            if ev.answer:
                said = text_between(pieces, span.end, boundary)
                row.update(answer=list(ev.answer), monologue=said, answer_correct=contains_answer(said, ev.answer))
        elif ev.kind == "hesitation":
            next_start = spans[i + 1].event.start if i + 1 < len(spans) else duration_s
            floor = (ev.start, next_start)
            row["held"] = not any(floor[0] <= t < floor[1] for t in onsets)
        else:
            floor = None
            talking = bayling.speaking_at(model, ev.start)
            if ev.kind == "barge_in":
                row["stop_latency_s"] = None if talking is None else talking[1] - ev.start
                row["success"] = None if talking is None else row["stop_latency_s"] <= STOP_WINDOW_S
            else:
                row["continued"] = None if talking is None else talking[1] > span.end
        if floor is not None:
            row["false_starts"] = sum(floor[0] <= t < floor[1] for t in onsets)
            false_starts += row["false_starts"]
        rows.append(row)

    def of(kind: str) -> list[dict]:
        return [r for r in rows if r["kind"] == kind]

    turns, barges, hesitations, backchannels = of("turn"), of("barge_in"), of("hesitation"), of("backchannel")
    stopped = [r for r in barges if r["success"] is not None]
    talked_over = [r for r in backchannels if r["continued"] is not None]
    asked = [r for r in turns if "answer" in r]
    return {
        "turn_taking": {
            "success_rate": _rate(sum(r["success"] for r in turns), len(turns)),
            "latency_s": _mean([r["latency_s"] for r in turns if r["latency_s"] is not None]),
            "false_starts": false_starts,
            "turns": len(turns),
            "successes": sum(r["success"] for r in turns),
            "replies": sum(r["latency_s"] is not None for r in turns),
        },
        "barge_in": {
            "success_rate": _rate(sum(r["success"] for r in stopped), len(stopped)),
            "stop_latency_s": _mean([r["stop_latency_s"] for r in stopped]),
            "response_latency_s": _mean([r["latency_s"] for r in barges if r["latency_s"] is not None]),
            "count": len(barges),
            "applicable": len(stopped),
            "successes": sum(r["success"] for r in stopped),
        },
        "hesitation": {
            "hold_rate": _rate(sum(r["held"] for r in hesitations), len(hesitations)),
            "count": len(hesitations),
            "held": sum(r["held"] for r in hesitations),
        },
        "backchannel": {
            "continue_rate": _rate(sum(r["continued"] for r in talked_over), len(talked_over)),
            "count": len(backchannels),
            "applicable": len(talked_over),
            "continued": sum(r["continued"] for r in talked_over),
        },
        "answers": {
            "accuracy": _rate(sum(r["answer_correct"] for r in asked), len(asked)),
            "count": len(asked),
            "correct": sum(r["answer_correct"] for r in asked),
        },
        "bayling": bayling.summary([r["latency_s"] for r in turns], [r["stop_latency_s"] for r in barges]),
        "user_events": rows,
    }
