"""Rendering: segments -> tokens and weights, and the streams' delays applied to a sample."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from flmjax.data.layouts.segments import Channel, Sample, Segment
from flmjax.tokens import RELEASE_TOKENS, TEXT_STREAM, TokenIds, delay_streams


def tiled(codes: np.ndarray, num_frames: int) -> np.ndarray:
    """[num_frames, 8] frames of `codes` [8, P] repeated by absolute frame index."""
    return codes[:, np.arange(num_frames) % codes.shape[1]].T


def render(
    segments: Sequence[Segment],
    audio: Sequence[np.ndarray],
    content_frames: int,
    total_frames: int,
    ids: TokenIds,
    silence: np.ndarray | None = None,
    listen_codes: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Write segments onto a [total_frames, 17] canvas (see the package docstring for the fills).

    `silence` [8, P]: Mimi codes of silence filling both audio channels where nothing is placed (dialogs);
    None: the unused-channel id (post-training). `listen_codes` [8, >= content_frames - 1]: the whole
    listen channel from frame 1 on (a rendered and augmented user track), replacing the user segments.
    """
    speak, listen = ids.speak_streams, ids.listen_streams
    size = max(content_frames, total_frames)
    tokens = np.empty((size, ids.num_streams), dtype=np.int32)
    weights = np.zeros((size, ids.num_streams), dtype=np.float32)
    tokens[:, TEXT_STREAM] = ids.text_wait
    weights[:content_frames, TEXT_STREAM] = 1.0
    if silence is None:
        tokens[:, 1:] = ids.unused_audio_channel
    else:
        fill = tiled(silence, content_frames)
        tokens[:content_frames, speak] = fill
        tokens[:content_frames, listen] = fill
        weights[:content_frames, speak] = 1.0
    if listen_codes is not None:
        tokens[1:content_frames, listen] = listen_codes[:, : content_frames - 1].T
    for seg in segments:
        if seg.text_start is not None:
            tokens[seg.text_start : seg.text_end, TEXT_STREAM] = seg.text
        if seg.audio_start is None or seg.audio_end is None or seg.source is None:
            continue
        if seg.channel == Channel.LISTEN and listen_codes is not None:
            continue
        a0, a1 = seg.audio_start, seg.audio_end
        streams = speak if seg.channel == Channel.SPEAK else listen
        tokens[a0:a1, streams] = audio[seg.source][:, : a1 - a0].T
        if seg.channel == Channel.SPEAK:
            weights[a0:a1, streams] = 1.0
    tokens[0, : speak.stop] = ids.initial_column[: speak.stop]
    weights[0] = 0.0
    tokens[content_frames:, 1:] = ids.unused_audio_channel  # padding (text is <wait> already)
    return tokens[:total_frames], weights[:total_frames]


def delay_sample(sample: Sample, ids: TokenIds = RELEASE_TOKENS) -> tuple[np.ndarray, np.ndarray]:
    """Tokens and weights in delayed columns [T + max_delay, 17]; columns outside a stream weigh 0."""
    zero = np.zeros((ids.num_streams,), dtype=sample.weights.dtype)
    return delay_streams(sample.tokens, ids), delay_streams(sample.weights, ids, fill=zero)
