"""Preference pairs for DPO (BayLing-Duplex Stage II, section 3): a dialog as planned for fine-tuning
(the chosen side) and the same dialog with only the model's timing changed (the rejected side).

- Turn-taking: one reply that answers a user turn starts `late_reply_s` ~ Uniform(2, 5) s after the
  user's turn ends instead of right away (text and speech shift together).
- Interruption: one interrupted reply stops `late_stop_s` ~ Uniform(3, 5) s after the user's onset
  instead of after the reaction delay (0.5 s): its text and speech go on meanwhile (or to the reply's
  end if that comes first).

Both sides hold the same user audio on listen and the same response text and speech, in order. A pair
covers the dialog up to the perturbed reply (turn-taking) or up to the end of the interrupting user turn
(interruption), and lasts until both sides are done: later turns are left out of both, and the listen
channel is silence from the first left-out user turn on, so the sides differ in nothing but the timing.
Kinds mix by `interruption_ratio` (1:1 by default); a dialog without the drawn kind gives the other.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from enum import StrEnum

import numpy as np

from flmjax.config import ConfigError
from flmjax.data.layouts.checks import check_codes
from flmjax.data.layouts.config import LayoutConfig
from flmjax.data.layouts.dialog import DialogPlan, Turn, render_dialog, response_segment
from flmjax.data.layouts.render import tiled
from flmjax.data.layouts.segments import LayoutError, Sample, Segment, SegmentKind, frames
from flmjax.tokens import RELEASE_TOKENS, TokenIds


class PairKind(StrEnum):
    TURN_TAKING = "turn_taking"
    INTERRUPTION = "interruption"


@dataclasses.dataclass(frozen=True)
class PreferenceConfig:
    """How preference pairs are made; defaults are BayLing-Duplex's (section 3)."""

    interruption_ratio: float = 0.5  # fraction of interruption pairs (1:1 with turn-taking)
    late_reply_s: tuple[float, float] = (2.0, 5.0)  # turn-taking: the rejected reply's gap after the user
    late_stop_s: tuple[float, float] = (3.0, 5.0)  # interruption: the rejected reply stops this long after the onset

    def __post_init__(self) -> None:
        if not 0.0 <= self.interruption_ratio <= 1.0:
            raise ConfigError(f"preference.interruption_ratio must lie in [0, 1], got {self.interruption_ratio}")
        for name in ("late_reply_s", "late_stop_s"):
            lo, hi = getattr(self, name)
            if not 0.0 <= lo <= hi:
                raise ConfigError(f"preference.{name} must be (low, high) with 0 <= low <= high, got {(lo, hi)}")


@dataclasses.dataclass(frozen=True)
class PairPlan:
    """Both sides' plans (the same `num_frames`) and the first frame whose listen codes are silence."""

    kind: PairKind
    chosen: DialogPlan
    rejected: DialogPlan
    listen_end: int
    perturbed: int  # index of the changed response segment (in both plans)


@dataclasses.dataclass
class SamplePair:
    kind: PairKind
    chosen: Sample
    rejected: Sample


def _candidates(segments: Sequence[Segment]) -> dict[PairKind, list[int]]:
    """Response segments that can be perturbed: uninterrupted replies right after a user turn, and
    interrupted replies (followed by their interrupting user turn)."""
    found: dict[PairKind, list[int]] = {PairKind.TURN_TAKING: [], PairKind.INTERRUPTION: []}
    for i, seg in enumerate(segments):
        if seg.kind != SegmentKind.RESPONSE:
            continue
        if seg.cut_frame is None and i and segments[i - 1].kind == SegmentKind.USER:
            found[PairKind.TURN_TAKING].append(i)
        nxt = segments[i + 1] if i + 1 < len(segments) else None
        if seg.cut_frame is not None and nxt is not None and nxt.kind == SegmentKind.USER and nxt.interrupts:
            found[PairKind.INTERRUPTION].append(i)
    return found


def _moved(seg: Segment, shift: int) -> Segment:
    def add(x: int | None) -> int | None:
        return None if x is None else x + shift

    return dataclasses.replace(
        seg, text_start=add(seg.text_start), text_end=add(seg.text_end), audio_start=add(seg.audio_start),
        audio_end=add(seg.audio_end),
    )  # fmt: skip


def _stopped(seg: Segment, full_text: tuple[int, ...], full_frames: int, stop: int) -> Segment:
    """A response segment whose speech runs until `stop` (at most its whole turn), its text with it."""
    assert seg.text_start is not None and seg.audio_start is not None
    assert seg.source is not None
    cut = stop if stop < seg.audio_start + full_frames else None
    return response_segment(full_text, seg.text_start, seg.audio_start, full_frames, seg.source, cut)


def plan_pair(
    plan: DialogPlan,
    turns: Sequence[Turn],
    rng: np.random.Generator,
    cfg: PreferenceConfig = PreferenceConfig(),
) -> PairPlan:
    """The pair of a fine-tuning plan (the chosen side): draw the kind, one reply of it, and its delay."""
    segments = list(plan.segments)
    found = _candidates(segments)
    kind = PairKind.INTERRUPTION if rng.random() < cfg.interruption_ratio else PairKind.TURN_TAKING
    if not found[kind]:
        kind = PairKind.TURN_TAKING if kind == PairKind.INTERRUPTION else PairKind.INTERRUPTION
    if not found[kind]:
        raise LayoutError("no reply to perturb: the dialog has no model turn answering or interrupted by a user turn")
    j = found[kind][int(rng.integers(len(found[kind])))]
    reply = segments[j]
    assert reply.text_start is not None and reply.audio_start is not None and reply.source is not None
    if kind == PairKind.TURN_TAKING:
        user_end = segments[j - 1].end
        gap = frames(rng.uniform(*cfg.late_reply_s))
        late = _moved(reply, user_end + gap - reply.text_start)
        last = j
    else:
        onset = segments[j + 1].audio_start
        assert onset is not None
        turn = turns[reply.source]
        full_text = tuple(int(t) for t in turn["text_tokens"])
        stop = onset + frames(rng.uniform(*cfg.late_stop_s))
        late = _stopped(reply, full_text, np.asarray(turn["codes"]).shape[1], stop)
        last = j + 1
    chosen = segments[: last + 1]
    rejected = chosen[:j] + [late] + chosen[j + 1 :]
    num_frames = max(max(s.end for s in chosen), max(s.end for s in rejected))
    later_users = [s.audio_start for s in segments[last + 1 :] if s.kind == SegmentKind.USER]
    listen_end = min([num_frames, *(start for start in later_users if start is not None)])
    return PairPlan(
        kind, DialogPlan(plan.layout, chosen, num_frames), DialogPlan(plan.layout, rejected, num_frames), listen_end, j
    )


def render_pair(
    pair: PairPlan,
    turns: Sequence[Turn],
    silence_codes: np.ndarray,
    ids: TokenIds = RELEASE_TOKENS,
    cfg: LayoutConfig = LayoutConfig(),
    listen_codes: np.ndarray | None = None,
) -> SamplePair:
    """Both sides rendered over one listen channel: the dialog's (`listen_codes` [8, >= 1], frames from
    1 on; None: the clean user turns) up to `pair.listen_end`, silence codes after it."""
    silence = check_codes(silence_codes, ids, "silence_codes")
    n = pair.chosen.num_frames
    listen = tiled(silence, n).T.copy()  # [8, n]: frame f holds silence column f % P, as render fills it
    if listen_codes is None:
        for seg in pair.chosen.segments:
            if seg.kind == SegmentKind.USER and seg.audio_start is not None and seg.source is not None:
                a0, a1 = seg.audio_start, min(seg.audio_end or 0, pair.listen_end)
                listen[:, a0:a1] = np.asarray(turns[seg.source]["codes"])[:, : max(0, a1 - a0)]
    else:
        listen_codes = check_codes(listen_codes, ids, "listen_codes")
        upto = min(pair.listen_end, listen_codes.shape[1] + 1)
        listen[:, 1:upto] = listen_codes[:, : upto - 1]
    sides = [render_dialog(p, turns, silence, ids, cfg, listen[:, 1:]) for p in (pair.chosen, pair.rejected)]
    return SamplePair(pair.kind, *sides)
