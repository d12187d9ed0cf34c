"""BayLing-Duplex's dialogue-state tokens on a dialog's text channel (`LayoutConfig.text_states="bayling"`).

Where FLM-Audio's layouts leave `<wait>`, the text channel says what the model is doing:
- `[ASSISTANT]` on the frame before a model turn's first text (its `<asr>` span or its response): the
  reply's onset (BayLing's j_ast = the position before the content), when that frame is free;
- the response tokens where the layout put them (unchanged, and so is the speech);
- `[PAD]` after the response text while its speech goes on;
- `[EPAD]` on the first frame after both the text and the speech are done, an interruption's cut
  included (the reply ends there), when that frame is free;
- `[SILENCE]` on every other content frame (the model is silent).
A frame keeps the first of: text, `[ASSISTANT]`, `[EPAD]`, `[PAD]`, `[SILENCE]`; so a reply that starts
on frame 1, or right where another one ends, has no `[ASSISTANT]` (or its predecessor no `[EPAD]`).
Frame 0 (the decoder's initial `<wait>`) and padding frames are left as they are. Weights do not change:
every content position of the text channel carries loss; the loss tells the classes by the token.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from flmjax.data.layouts.segments import LayoutError, Segment, SegmentKind
from flmjax.tokens import TEXT_STREAM, TokenIds


def apply_state_tokens(tokens: np.ndarray, segments: Sequence[Segment], content_frames: int, ids: TokenIds) -> None:
    """Rewrite the text channel of a rendered dialog [T, 17] in place (see the module docstring)."""
    if ids.state_tokens is None:
        raise LayoutError("text_states='bayling' needs a vocabulary with state tokens (a *_state model config)")
    silence, assistant, pad, epad = ids.state_tokens
    n = min(content_frames, len(tokens))
    taken = np.zeros(n, bool)
    taken[0] = True  # the decoder's initial frame
    for seg in segments:
        if seg.text_start is not None and seg.text_end is not None:
            taken[seg.text_start : min(seg.text_end, n)] = True
    text = np.full(n, silence, np.int32)
    text[taken] = tokens[:n, TEXT_STREAM][taken]
    onsets, ends, pads = [], [], []
    for k, seg in enumerate(segments):
        if seg.kind != SegmentKind.RESPONSE or seg.audio_start is None or seg.audio_end is None:
            continue
        first = seg.text_start
        if k and segments[k - 1].kind == SegmentKind.ASR and segments[k - 1].text_end == seg.text_start:
            first = segments[k - 1].text_start  # semi-duplex: the turn begins with its `<asr>` span
        if first is not None:
            onsets.append(first - 1)
        text_end = seg.text_end if seg.text_end is not None else seg.audio_start
        pads.append((text_end, seg.audio_end))
        ends.append(max(text_end, seg.audio_end))
    for a0, a1 in pads:
        span = np.arange(a0, min(a1, n))
        text[span[~taken[span]]] = pad
    for frame, token in [(f, epad) for f in ends] + [(f, assistant) for f in onsets]:  # onsets win
        if 0 <= frame < n and not taken[frame]:
            text[frame] = token
    tokens[:n, TEXT_STREAM] = text
