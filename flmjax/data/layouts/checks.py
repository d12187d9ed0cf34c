"""Checks of the material a layout is given: one-line `LayoutError`s naming the pair or turn."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from flmjax.data.layouts.segments import LayoutError, TranscriptTooLongError
from flmjax.tokens import TokenIds


def check_codes(codes: np.ndarray, ids: TokenIds, what: str) -> np.ndarray:
    """Mimi codes int [8, frames >= 1] within the codebook."""
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[0] != ids.num_codebooks or codes.shape[1] < 1:
        raise LayoutError(f"{what}: audio codes must have shape [{ids.num_codebooks}, frames>=1], got {codes.shape}")
    if not np.issubdtype(codes.dtype, np.integer):
        raise LayoutError(f"{what}: audio codes must be integers, got {codes.dtype}")
    if codes.min() < 0 or codes.max() >= ids.codebook_size:
        raise LayoutError(
            f"{what}: audio codes must lie in [0, {ids.codebook_size}), got [{codes.min()}, {codes.max()}]"
        )
    return codes


def check_text(tokens: Sequence[int], ids: TokenIds, what: str) -> tuple[int, ...]:
    """A non-empty transcript of text token ids within the vocabulary."""
    out = tuple(int(t) for t in tokens)
    if not out:
        raise LayoutError(f"{what}: empty transcript")
    if min(out) < 0 or max(out) >= ids.text_vocab_size:
        raise LayoutError(f"{what}: text tokens must lie in [0, {ids.text_vocab_size})")
    return out


def check_fits(num_tokens: int, num_frames: int, lead: int, what: str) -> None:
    """TTS style: the text must end by the time its speech does."""
    if num_tokens > lead + num_frames:
        raise TranscriptTooLongError(
            f"{what}: {num_tokens} text tokens exceed the {lead + num_frames} frames its speech leaves "
            f"({num_frames} speech frames + lead {lead})"
        )
