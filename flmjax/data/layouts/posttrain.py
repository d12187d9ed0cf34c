"""Post-training layouts: (clip, sentence) pairs TTS or ASR style, contiguous or word-level, packed into samples."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from flmjax.data.layouts.checks import check_codes, check_fits, check_text
from flmjax.data.layouts.config import LayoutConfig
from flmjax.data.layouts.render import render
from flmjax.data.layouts.segments import (
    Channel,
    Layout,
    LayoutError,
    Sample,
    SampleTooLongError,
    Segment,
    SegmentKind,
    Style,
    frames,
)
from flmjax.tokens import FRAME_RATE_HZ, RELEASE_TOKENS, TokenIds


class WordTiming(NamedTuple):
    """One word of a transcript: its token ids and its time in the clip, seconds from the clip's start."""

    tokens: Sequence[int]
    start_s: float
    end_s: float


class AlignedPair(NamedTuple):
    """A post-training (audio clip, sentence) pair; `words` only for the word-level ablation."""

    codes: np.ndarray  # int32 [8, F]
    text_tokens: Sequence[int]
    words: Sequence[WordTiming] | None = None


def _audio_segment(style: Style, start: int, lead: int, n: int, source: int, text: tuple[int, ...] = ()) -> Segment:
    """A clip TTS style (on speak, `lead` after `start`, text from `start`) or ASR style (on listen from
    `start`, text right after it)."""
    if style == Style.TTS:
        return Segment.place(
            SegmentKind.TTS,
            text=text,
            text_start=start if text else None,
            audio_start=start + lead,
            audio_frames=n,
            channel=Channel.SPEAK,
            source=source,
        )
    return Segment.place(
        SegmentKind.ASR,
        text=text,
        text_start=start + n if text else None,
        audio_start=start,
        audio_frames=n,
        channel=Channel.LISTEN,
        source=source,
    )


def _plan_contiguous(
    codes: np.ndarray, tokens: tuple[int, ...], style: Style, start: int, source: int, lead: int, what: str
) -> list[Segment]:
    """One sentence as a contiguous run: TTS (text leads its speech by `lead`) or ASR (text after the audio)."""
    n = codes.shape[1]
    if style == Style.TTS:
        check_fits(len(tokens), n, lead, what)
    return [_audio_segment(style, start, lead, n, source, tokens)]


def _plan_words(
    codes: np.ndarray,
    words: Sequence[WordTiming],
    style: Style,
    start: int,
    source: int,
    lead: int,
    ids: TokenIds,
    what: str,
) -> list[Segment]:
    """Moshi-like word-level alignment; `<wait>` pads between words (Moshi's PAD/EPAD are not in the vocabulary).

    TTS style: a word's tokens start at the frame its speech starts (floor), minus `lead`, so that text
    leads speech as in the contiguous TTS style. ASR style: a word's tokens start at the frame after it has
    been heard (ceil of its end). A word whose frame is still taken by the previous word's tokens follows
    them directly.
    """
    n = codes.shape[1]
    if not words:
        raise LayoutError(f"{what}: the word-level layout needs word timings")
    segments, cursor, previous = [_audio_segment(style, start, lead, n, source)], start, 0.0
    for k, word in enumerate(words):
        if not previous <= word.start_s <= word.end_s <= (n + 1) / FRAME_RATE_HZ:
            raise LayoutError(
                f"{what}: word {k} times ({word.start_s}, {word.end_s}) s are negative, out of order or past "
                f"the clip's {n / FRAME_RATE_HZ} s"
            )
        previous = word.start_s
        at = math.floor(word.start_s * FRAME_RATE_HZ) if style == Style.TTS else math.ceil(word.end_s * FRAME_RATE_HZ)
        text = check_text(word.tokens, ids, f"{what} word {k}")
        segments.append(Segment.place(SegmentKind.WORD, text=text, text_start=max(start + at, cursor)))
        cursor = segments[-1].end
    if style == Style.TTS:
        check_fits(cursor - start, n, lead, what)
    return segments


def _plan_pair(
    pair: AlignedPair, style: Style, start: int, source: int, ids: TokenIds, cfg: LayoutConfig
) -> list[Segment]:
    what = f"pair {source}"
    codes = check_codes(pair.codes, ids, what)
    if cfg.alignment == "word":
        return _plan_words(codes, pair.words or (), style, start, source, cfg.lead_frames, ids, what)
    text = check_text(pair.text_tokens, ids, what)
    return _plan_contiguous(codes, text, style, start, source, cfg.lead_frames, what)


def _single_pair(pair: AlignedPair, style: Style, layout: Layout, ids: TokenIds, cfg: LayoutConfig) -> Sample:
    segments = _plan_pair(pair, style, 1, 0, ids, cfg)
    num_frames = max(s.end for s in segments)
    if num_frames > cfg.sample_frames:
        raise SampleTooLongError(f"pair 0: {num_frames} frames exceed sample_frames {cfg.sample_frames}")
    tokens, weights = render(segments, [np.asarray(pair.codes)], num_frames, num_frames, ids)
    return Sample(tokens, weights, segments, layout)


def layout_tts(
    codes: np.ndarray, text_tokens: Sequence[int], ids: TokenIds = RELEASE_TOKENS, cfg: LayoutConfig = LayoutConfig()
) -> Sample:
    """One sentence TTS style: text from frame 1, speech from frame 1 + lead, `<wait>` until the speech ends."""
    cfg = dataclasses.replace(cfg, alignment="contiguous")
    return _single_pair(AlignedPair(codes, text_tokens), Style.TTS, Layout.TTS, ids, cfg)


def layout_asr(
    codes: np.ndarray, text_tokens: Sequence[int], ids: TokenIds = RELEASE_TOKENS, cfg: LayoutConfig = LayoutConfig()
) -> Sample:
    """One sentence ASR style: speech on listen from frame 1 (text `<wait>`), the sentence right after it."""
    cfg = dataclasses.replace(cfg, alignment="contiguous")
    return _single_pair(AlignedPair(codes, text_tokens), Style.ASR, Layout.ASR, ids, cfg)


def layout_word_level(
    codes: np.ndarray,
    words: Sequence[WordTiming],
    style: Style | str = Style.TTS,
    ids: TokenIds = RELEASE_TOKENS,
    cfg: LayoutConfig = LayoutConfig(),
) -> Sample:
    """One clip with word-level text (the papers' Table 7 ablation), TTS or ASR style (see `_plan_words`)."""
    if style not in tuple(Style):
        raise LayoutError(f"style must be {Style.TTS.value!r} or {Style.ASR.value!r}, got {style!r}")
    style = Style(style)
    cfg = dataclasses.replace(cfg, alignment="word")
    layout = Layout.WORD_TTS if style == Style.TTS else Layout.WORD_ASR
    return _single_pair(AlignedPair(codes, (), words), style, layout, ids, cfg)


def assemble_post_training(
    pairs: Sequence[AlignedPair],
    rng: np.random.Generator,
    ids: TokenIds = RELEASE_TOKENS,
    cfg: LayoutConfig = LayoutConfig(),
) -> tuple[Sample, int]:
    """Pack pairs, in order, into one sample of `cfg.sample_frames` frames; returns it and the pairs used.

    Each pair is preceded by a random silence (`cfg.gap_s`, text `<wait>` with weight, both audio
    channels the unused-channel id) and laid out TTS style with probability `cfg.tts_ratio`, else ASR
    style. Packing stops at the first pair that does not fit; the caller starts the next sample with it.
    """
    segments: list[Segment] = []
    cursor, used, end = 1, 0, 0
    for source, pair in enumerate(pairs):
        start = cursor + frames(rng.uniform(*cfg.gap_s))
        style = Style.TTS if rng.random() < cfg.tts_ratio else Style.ASR
        placed = _plan_pair(pair, style, start, source, ids, cfg)
        end = max(s.end for s in placed)
        if end > cfg.sample_frames:
            break
        segments += placed
        cursor, used = end, used + 1
    if used == 0:
        if not pairs:
            raise LayoutError("assemble_post_training: no pairs given")
        raise SampleTooLongError(f"pair 0 needs {end} frames, more than sample_frames {cfg.sample_frames}")
    audio = [np.asarray(p.codes) for p in pairs[:used]]
    tokens, weights = render(segments, audio, cursor, cfg.sample_frames, ids)
    layout = Layout.POST_TRAINING_WORD if cfg.alignment == "word" else Layout.POST_TRAINING_CONTIGUOUS
    return Sample(tokens, weights, segments, layout), used
