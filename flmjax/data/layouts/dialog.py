"""Fine-tuning layouts: dialogs planned (where every turn goes) and rendered (tokens and weights)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TypedDict

import numpy as np

from flmjax.data.layouts.checks import check_codes, check_fits, check_text
from flmjax.data.layouts.config import LayoutConfig
from flmjax.data.layouts.render import render, tiled
from flmjax.data.layouts.segments import (
    DIALOG_LAYOUTS,
    Channel,
    Layout,
    LayoutError,
    Sample,
    Segment,
    SegmentKind,
    clip_segments,
)
from flmjax.data.layouts.states import apply_state_tokens
from flmjax.tokens import RELEASE_TOKENS, TokenIds


class Turn(TypedDict):
    """A dialog turn as the corpus gives it; frames count from the dialog's start."""

    role: str  # "user" | "model"
    codes: np.ndarray  # int32 [8, F]
    text_tokens: Sequence[int]
    start_frame: int
    end_frame: int  # start_frame + F


@dataclasses.dataclass(frozen=True)
class DialogPlan:
    """Where a dialog's turns go in a sample, before any token is written (see `plan_dialog`)."""

    layout: Layout
    segments: list[Segment]
    num_frames: int  # content frames, the initial frame included

    def to_json(self) -> dict:
        return {
            "layout": str(self.layout),
            "segments": [s.to_json() for s in self.segments],
            "num_frames": self.num_frames,
        }

    @classmethod
    def from_json(cls, obj: dict) -> DialogPlan:
        recorded = obj["layout"] == Layout.RECORDED  # flmjax.data.moshi's windows of a recording
        layout = Layout.RECORDED if recorded else dialog_layout(obj["layout"])
        return cls(layout, [Segment.from_json(s) for s in obj["segments"]], int(obj["num_frames"]))


def dialog_layout(name: str) -> Layout:
    """One of `DIALOG_LAYOUTS` by name, or a one-line error."""
    if name not in DIALOG_LAYOUTS:
        raise LayoutError(f"unknown dialog layout {name!r}; one of {tuple(str(d) for d in DIALOG_LAYOUTS)}")
    return Layout(name)


def _check_turn(turn: Turn, index: int, ids: TokenIds) -> tuple[str, np.ndarray, tuple[int, ...]]:
    what = f"turn {index}"
    if turn["role"] not in ("user", "model"):
        raise LayoutError(f"{what}: role must be 'user' or 'model', got {turn['role']!r}")
    codes = check_codes(turn["codes"], ids, what)
    if turn["end_frame"] - turn["start_frame"] != codes.shape[1]:
        raise LayoutError(
            f"{what}: end_frame - start_frame = {turn['end_frame'] - turn['start_frame']} but its codes have "
            f"{codes.shape[1]} frames"
        )
    return turn["role"], codes, check_text(turn["text_tokens"], ids, what)


def response_segment(
    text: Sequence[int], text_start: int, speech_start: int, frames: int, source: int, cut: int | None
) -> Segment:
    """A model turn of `frames` speech frames on the speak channel, stopped at frame `cut` when given:
    its speech ends there and its text keeps only the tokens placed before it."""
    kept = tuple(text) if cut is None else tuple(text)[: max(0, cut - text_start)]
    return Segment.place(
        SegmentKind.RESPONSE, text=kept, text_start=text_start, audio_start=speech_start,
        audio_frames=frames if cut is None else cut - speech_start, channel=Channel.SPEAK, source=source,
        cut_frame=cut,
    )  # fmt: skip


def plan_dialog(
    turns: Sequence[Turn],
    layout: Layout | str,
    rng: np.random.Generator | None = None,
    ids: TokenIds = RELEASE_TOKENS,
    cfg: LayoutConfig = LayoutConfig(),
) -> DialogPlan:
    """Place a dialog's turns for one of `DIALOG_LAYOUTS` (the timing a waveform renderer also needs).

    Frame 1 of the sample is frame 0 of the dialog. Turns are taken in list order:
    - a user turn starts after what precedes it plus the corpus gap (its start_frame minus the previous
      turn's end_frame; negative gaps count as 0 except where they make an interruption, below);
    - a model turn answering a user turn starts its text when the user turn ends: in `asr_response_tts`
      with `<asr>` + the transcripts of the user turns since the last model turn + `<answer>`, then the
      response; the response speech starts `cfg.lead_frames` after the response text starts, and the
      text is `<wait>` until the speech ends. A model turn after a model turn (or first) keeps its gap.
    - `response_tts_free` adds interruptions: a user turn that overlaps the model turn before it in the
      corpus starts at that overlap (not before the model's speech starts); besides, with probability
      `cfg.interruption_prob` one more model turn followed by a user turn, both long enough, is
      interrupted at a uniform frame of its speech. When the user speaks for more than the reaction delay
      (`cfg.reaction_frames`) while the model speaks, the model's text and speech stop that many frames
      after the user's onset (`cut_frame`): from there the text is `<wait>` and speak is silence, both
      weighted, so the model learns to stop. A user utterance no longer than the reaction delay is a
      back-channel: the model keeps speaking. The dialog goes on when the interrupting turn ends.
    """
    layout = dialog_layout(layout)
    if not turns:
        raise LayoutError(f"{layout}: the dialog has no turns")
    checked = [_check_turn(t, i, ids) for i, t in enumerate(turns)]
    roles = [role for role, _, _ in checked]
    lengths = [codes.shape[1] for _, codes, _ in checked]
    gaps = [turns[0]["start_frame"]] + [
        turns[i]["start_frame"] - turns[i - 1]["end_frame"] for i in range(1, len(turns))
    ]
    lead, reaction = cfg.lead_frames, cfg.reaction_frames
    free = layout == Layout.RESPONSE_TTS_FREE

    def answered(i: int) -> bool:  # model turn i is followed by a user turn that can interrupt it
        return roles[i] == "model" and i + 1 < len(turns) and roles[i + 1] == "user" and lengths[i + 1] > reaction

    chosen = None
    if free and rng is None:
        raise LayoutError("response_tts_free needs a random generator")
    if free and rng is not None and rng.random() < cfg.interruption_prob:
        eligible = [i for i in range(len(turns)) if answered(i) and gaps[i + 1] >= 0 and lengths[i] > reaction]
        if eligible:
            chosen = eligible[int(rng.integers(len(eligible)))]

    segments: list[Segment] = []
    end = 1  # first frame after everything placed so far
    heard: list[int] = []  # transcripts of the user turns since the last model turn
    onset: int | None = None  # start of a user turn overlapping the model turn before it
    cut: int | None = None  # where that model turn stopped
    for i, (role, _, text) in enumerate(checked):
        n = lengths[i]
        if role == "user":
            start = onset if onset is not None else end + max(gaps[i], 0)
            segments.append(
                Segment.place(
                    SegmentKind.USER,
                    text=text,
                    audio_start=start,
                    audio_frames=n,
                    channel=Channel.LISTEN,
                    source=i,
                    interrupts=cut is not None,
                )
            )
            end, onset, cut = max(end, start + n), None, None
            heard += text
            continue
        text_start = end if i and roles[i - 1] == "user" else end + max(gaps[i], 0)
        if layout == Layout.ASR_RESPONSE_TTS and heard:
            span = (ids.text_asr, *heard, ids.text_answer)
            segments.append(Segment.place(SegmentKind.ASR, text=span, text_start=text_start))
            text_start += len(span)
        heard = []
        check_fits(len(text), n, lead, f"turn {i}")
        speech_start = text_start + lead
        cut = None
        if free and i == chosen and rng is not None:
            onset = speech_start + int(rng.integers(n - reaction))
        elif free and i + 1 < len(turns) and roles[i + 1] == "user" and gaps[i + 1] < 0:
            onset = max(speech_start, speech_start + n + gaps[i + 1])
        if onset is not None and answered(i) and onset + reaction < speech_start + n:
            cut = onset + reaction
        segments.append(response_segment(text, text_start, speech_start, n, i, cut))
        end = speech_start + n if cut is None else cut
    return DialogPlan(layout, segments, max(s.end for s in segments))


def render_dialog(
    plan: DialogPlan,
    turns: Sequence[Turn],
    silence_codes: np.ndarray,
    ids: TokenIds = RELEASE_TOKENS,
    cfg: LayoutConfig = LayoutConfig(),
    listen_codes: np.ndarray | None = None,
) -> Sample:
    """Tokens and weights of a planned dialog; longer than `cfg.sample_frames`, it is truncated.

    `silence_codes` [8, P]: Mimi codes of silence (speak while the model is silent, listen while the user
    is). `listen_codes` [8, >= plan.num_frames - 1]: the whole listen channel from frame 1 (a user track
    rendered with the plan's timing, augmented, then encoded); None places each user turn's codes.
    With `cfg.text_states="bayling"` the text channel carries the dialogue-state tokens (`layouts.states`).
    """
    silence = check_codes(silence_codes, ids, "silence_codes")
    if listen_codes is not None:
        listen_codes = check_codes(listen_codes, ids, "listen_codes")
        if listen_codes.shape[1] < plan.num_frames - 1:
            raise LayoutError(f"listen_codes has {listen_codes.shape[1]} frames, the plan needs {plan.num_frames - 1}")
    states = cfg.text_states == "bayling"
    content = plan.num_frames + 1 if states else plan.num_frames  # state tokens: room for the last [EPAD]
    if listen_codes is not None and listen_codes.shape[1] < content - 1:  # that frame: listen silence
        listen_codes = np.concatenate([listen_codes, tiled(silence, content)[content - 1 :].T], axis=1)
    total = cfg.sample_frames if cfg.pad_dialogs else min(content, cfg.sample_frames)
    audio = [np.asarray(t["codes"]) for t in turns]
    tokens, weights = render(plan.segments, audio, content, total, ids, silence, listen_codes)
    if states:
        apply_state_tokens(tokens, plan.segments, content, ids)
    return Sample(tokens, weights, clip_segments(plan.segments, total), plan.layout)


def layout_asr_response_tts(
    turns: Sequence[Turn], silence_codes: np.ndarray, ids: TokenIds = RELEASE_TOKENS, cfg: LayoutConfig = LayoutConfig()
) -> Sample:
    """Fine-tuning-1 (semi-duplex): `<asr>` transcript `<answer>` response after each user turn."""
    plan = plan_dialog(turns, Layout.ASR_RESPONSE_TTS, None, ids, cfg)
    return render_dialog(plan, turns, silence_codes, ids, cfg)


def layout_response_tts(
    turns: Sequence[Turn], silence_codes: np.ndarray, ids: TokenIds = RELEASE_TOKENS, cfg: LayoutConfig = LayoutConfig()
) -> Sample:
    """Fine-tuning-2: the response text starts when the user turn ends (no ASR span)."""
    return render_dialog(plan_dialog(turns, Layout.RESPONSE_TTS, None, ids, cfg), turns, silence_codes, ids, cfg)


def layout_response_tts_free(
    turns: Sequence[Turn],
    silence_codes: np.ndarray,
    rng: np.random.Generator,
    ids: TokenIds = RELEASE_TOKENS,
    cfg: LayoutConfig = LayoutConfig(),
) -> Sample:
    """Fine-tuning-2 with free user inputs: Response-TTS plus interruptions (see `plan_dialog`)."""
    plan = plan_dialog(turns, Layout.RESPONSE_TTS_FREE, rng, ids, cfg)
    return render_dialog(plan, turns, silence_codes, ids, cfg)
