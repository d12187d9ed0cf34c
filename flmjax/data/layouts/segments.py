"""What a layout produces: the names of layouts and segments, `Segment` with its JSON form, and `Sample`."""

from __future__ import annotations

import dataclasses
from enum import StrEnum
from typing import Any

import numpy as np

from flmjax.errors import FlmjaxError
from flmjax.tokens import FRAME_RATE_HZ


class LayoutError(FlmjaxError):
    """Material that a layout cannot place (bad shapes, codes out of range, inconsistent timing)."""


class TranscriptTooLongError(LayoutError):
    """A sentence has more tokens than the frames its speech leaves for it (TTS style)."""


class SampleTooLongError(LayoutError):
    """A single pair does not fit in one sample."""


class Style(StrEnum):
    """How a post-training (clip, sentence) pair is laid out: text before its speech, or after hearing it."""

    TTS = "tts"
    ASR = "asr"


class Layout(StrEnum):
    """The layout a sample was made with (`Sample.layout`); the last three are the dialog layouts."""

    TTS = "tts"
    ASR = "asr"
    WORD_TTS = "word_tts"
    WORD_ASR = "word_asr"
    POST_TRAINING_CONTIGUOUS = "post_training_contiguous"
    POST_TRAINING_WORD = "post_training_word"
    ASR_RESPONSE_TTS = "asr_response_tts"
    RESPONSE_TTS = "response_tts"
    RESPONSE_TTS_FREE = "response_tts_free"
    RECORDED = "recorded"  # a recorded conversation's own timing (`flmjax.data.moshi`); read by any dialog stage


DIALOG_LAYOUTS: tuple[Layout, ...] = (Layout.ASR_RESPONSE_TTS, Layout.RESPONSE_TTS, Layout.RESPONSE_TTS_FREE)


class SegmentKind(StrEnum):
    TTS = "tts"  # a sentence and its speech on speak (post-training)
    ASR = "asr"  # a sentence after its speech on listen (post-training), or a dialog's `<asr>` span (text only)
    WORD = "word"  # one word's text (word-level alignment; its clip is a TTS or ASR segment without text)
    USER = "user"  # a user turn on listen (dialogs; its transcript is not placed)
    RESPONSE = "response"  # a model turn: response text and its speech on speak (dialogs)


class Channel(StrEnum):
    SPEAK = "speak"
    LISTEN = "listen"


@dataclasses.dataclass(frozen=True)
class Segment:
    """One placed piece of a sample, in frames of the sample.

    `text` (token ids) lies on the text channel at [text_start, text_end), or is not placed when
    text_start is None; audio lies on `channel` at [audio_start, audio_end), filled from the codes of pair
    or turn `source`. `cut_frame`: where an interruption stopped a response (None: not interrupted);
    `interrupts`: a user turn that interrupted the response before it.
    """

    kind: SegmentKind
    text: tuple[int, ...] = ()
    text_start: int | None = None
    text_end: int | None = None
    audio_start: int | None = None
    audio_end: int | None = None
    channel: Channel | None = None
    source: int | None = None
    cut_frame: int | None = None
    interrupts: bool = False

    @classmethod
    def place(
        cls,
        kind: SegmentKind,
        *,
        text: tuple[int, ...] | list[int] = (),
        text_start: int | None = None,
        audio_start: int | None = None,
        audio_frames: int = 0,
        channel: Channel | None = None,
        source: int | None = None,
        cut_frame: int | None = None,
        interrupts: bool = False,
    ) -> Segment:
        """A segment from where its text and audio start and how long its audio is."""
        text = tuple(int(t) for t in text)
        return cls(
            kind=kind,
            text=text,
            text_start=text_start,
            text_end=None if text_start is None else text_start + len(text),
            audio_start=audio_start,
            audio_end=None if audio_start is None else audio_start + audio_frames,
            channel=channel,
            source=source,
            cut_frame=cut_frame,
            interrupts=interrupts,
        )

    @property
    def end(self) -> int:
        """The first frame after the segment."""
        return max(e for e in (self.text_end, self.audio_end, 0) if e is not None)

    def clipped(self, num_frames: int) -> Segment | None:
        """The segment truncated to a sample's first `num_frames` frames; None if it starts after them."""
        starts = [s for s in (self.text_start, self.audio_start) if s is not None]
        if starts and min(starts) >= num_frames:
            return None
        seg = self
        if seg.text_start is not None and seg.text_end is not None and seg.text_end > num_frames:
            text = seg.text[: max(0, num_frames - seg.text_start)]
            seg = dataclasses.replace(seg, text=text, text_end=seg.text_start + len(text))
        if seg.audio_end is not None:
            seg = dataclasses.replace(seg, audio_end=min(seg.audio_end, num_frames))
        return seg

    def to_json(self) -> dict[str, Any]:
        """Plain JSON values: every field, `text` a list, the names as strings."""
        obj = dataclasses.asdict(self)
        obj["text"] = list(self.text)
        obj["kind"] = str(self.kind)
        obj["channel"] = None if self.channel is None else str(self.channel)
        return obj

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Segment:
        """The inverse of `to_json`; fields missing from older records take their defaults."""
        try:
            channel = obj.get("channel")
            return cls(
                kind=SegmentKind(obj["kind"]),
                text=tuple(int(t) for t in obj.get("text", ())),
                text_start=obj.get("text_start"),
                text_end=obj.get("text_end"),
                audio_start=obj.get("audio_start"),
                audio_end=obj.get("audio_end"),
                channel=None if channel is None else Channel(channel),
                source=obj.get("source"),
                cut_frame=obj.get("cut_frame"),
                interrupts=bool(obj.get("interrupts", False)),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise LayoutError(f"not a layout segment ({e}): {obj!r}") from None


SEGMENT_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Segment))


def clip_segments(segments: list[Segment], num_frames: int) -> list[Segment]:
    """Segments of a sample truncated to its first `num_frames` frames."""
    return [s for s in (seg.clipped(num_frames) for seg in segments) if s is not None]


@dataclasses.dataclass
class Sample:
    """A laid-out training sample in raw coordinates (stream order text, speak cb0..7, listen cb0..7)."""

    tokens: np.ndarray  # int32 [T, 17]
    weights: np.ndarray  # float32 [T, 17]
    segments: list[Segment]
    layout: Layout


def frames(seconds: float) -> int:
    """Seconds -> the nearest whole number of 80 ms frames."""
    return int(round(seconds * FRAME_RATE_HZ))
