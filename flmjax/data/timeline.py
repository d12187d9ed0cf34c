"""A laid-out sample as people read it (a frame-by-frame timeline) and as tools read it (JSON).

Used by launch/inspect_data.py. Everything is in raw coordinates (frame r of every stream is the same
80 ms), before the pipeline delays the streams.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from flmjax.data.layouts import Channel, Sample
from flmjax.data.loss_classes import LossClass, loss_classes
from flmjax.tokens import FRAME_RATE_HZ, RELEASE_TOKENS, TEXT_STREAM, TokenIds


def sample_json(sample: Sample, ids: TokenIds = RELEASE_TOKENS) -> dict[str, Any]:
    """`{"layout", "text", "speak", "listen", "weights": {"text", "speak"}, "segments"}`, plain ints and floats."""
    tokens, weights = sample.tokens, sample.weights
    return {
        "layout": str(sample.layout),
        "text": tokens[:, TEXT_STREAM].tolist(),
        "speak": tokens[:, ids.speak_streams].tolist(),
        "listen": tokens[:, ids.listen_streams].tolist(),
        "weights": {"text": weights[:, TEXT_STREAM].tolist(), "speak": weights[:, ids.speak_streams].tolist()},
        "segments": [seg.to_json() for seg in sample.segments],
    }


def _channel_states(sample: Sample, channel: Channel, streams: slice, ids: TokenIds) -> list[str]:
    """Per frame: "speech" inside a segment of that channel, "no speech" for other codes (silence, noise), "-" for
    none."""
    codes = sample.tokens[:, streams.start] < ids.codebook_size
    states = np.where(codes, "no speech", "-").astype(object)
    for seg in sample.segments:
        if seg.channel == channel and seg.audio_start is not None:
            states[seg.audio_start : seg.audio_end] = "speech"
    return list(states)


def timeline(
    sample: Sample, decode: Callable[[list[int]], str], ids: TokenIds = RELEASE_TOKENS, all_frames: bool = False
) -> list[str]:
    """One line per frame: time, text token and its loss class, what each audio channel carries, and the
    speak loss (sem = semantic codebook, ac = acoustic codebooks). Unless `all_frames`, runs of frames
    whose text is `<wait>` (or `[SILENCE]`) and whose channels do not change are folded into one line."""
    classes = loss_classes(sample.tokens, sample.weights, ids)
    speak, listen = ids.speak_streams, ids.listen_streams
    speak_states = _channel_states(sample, Channel.SPEAK, speak, ids)
    listen_states = _channel_states(sample, Channel.LISTEN, listen, ids)

    names = {ids.text_wait: "<wait>"}
    if ids.state_tokens is not None:
        names.update(zip(ids.state_tokens, ("[SILENCE]", "[ASSISTANT]", "[PAD]", "[EPAD]")))
    foldable = (ids.text_wait, ids.state_tokens[0] if ids.state_tokens else ids.text_wait)

    def text_of(frame: int) -> str:
        token = int(sample.tokens[frame, TEXT_STREAM])
        return names[token] if token in names else repr(decode([token]))

    def rest_of(frame: int) -> str:
        text_class = LossClass(int(classes[frame, TEXT_STREAM])).name.lower()
        speak_loss = (
            "+".join(
                name
                for name, cls in (("sem", LossClass.SEMANTIC), ("ac", LossClass.ACOUSTIC))
                if (classes[frame, speak] == cls).any()
            )
            or "none"
        )
        return f"[{text_class:9s}] speak: {speak_states[frame]:9s} [{speak_loss:6s}] listen: {listen_states[frame]}"

    lines, frame, total = [], 0, sample.tokens.shape[0]
    while frame < total:
        end = frame + 1
        token = sample.tokens[frame, TEXT_STREAM]
        if not all_frames and token in foldable:  # runs of <wait> or [SILENCE]
            while end < total and sample.tokens[end, TEXT_STREAM] == token and rest_of(end) == rest_of(frame):
                end += 1
        when = f"{frame / FRAME_RATE_HZ:7.2f}s"
        if end - frame == 1:
            lines.append(f"{frame:5d}       {when}  {text_of(frame):14s} {rest_of(frame)}")
        else:
            label = f"{text_of(frame)} x{end - frame}"
            lines.append(f"{frame:5d}-{end - 1:<5d} {when}  {label:14s} {rest_of(frame)}")
        frame = end
    return lines


def describe_segments(sample: Sample, decode: Callable[[list[int]], str]) -> list[str]:
    lines = []
    for seg in sample.segments:
        has_text = seg.text_start is not None
        text = f"text [{seg.text_start}, {seg.text_end}) {decode(list(seg.text))!r}" if has_text else "no text"
        audio = f"{seg.channel} [{seg.audio_start}, {seg.audio_end})" if seg.audio_start is not None else "no audio"
        lines.append(f"  {seg.kind:8s} {audio:20s} {text}")
    return lines
