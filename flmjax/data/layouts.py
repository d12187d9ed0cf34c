"""Stream layouts of FLM-Audio's training stages (training.md section 2, the papers' Figure 3).

A layout turns already-tokenised material (text token ids, Mimi codes int32 [8, F] at 12.5 Hz) into a
`Sample`: tokens int32 [T, 17] in raw coordinates (stream order text, speak cb0..7, listen cb0..7; the
pipeline applies `delay_sample` afterwards), loss weights float32 [T, 17] and the segments it placed.

Conventions every layout follows:
- Frame 0 is the decoder's initial frame: text `<wait>`, speak `aud_pad`, zero weight. Its listen codes
  are the listen channel's fill (what the user sends while the decoder starts).
- Text: token runs where a layout places them, `<wait>` everywhere else; every text position of the
  content carries weight (the loss tells monologue from `<wait>` by the token).
- Speak: weight on every non-empty token: speech codes, and in dialogs (SFT) the Mimi-encoded silence the
  model produces whenever it does not speak. Post-training leaves speak empty where no TTS speech lies.
- Listen: input only, never weighted.
- A channel a layout does not use, and every channel in a post-training gap, holds
  `ids.unused_audio_channel` (the papers' "empty token") with zero weight: a gap has no speech on either
  side, and the post-training pairs come without any encoded silence to put there.
- Padding frames after the content: text `<wait>`, audio `ids.unused_audio_channel`, zero weight.

Timings are frames (80 ms); seconds convert with `frames()` (rounded) or floor/ceil where stated.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple, Sequence, TypedDict

import numpy as np

from flmjax.config import ConfigError
from flmjax.tokens import FRAME_RATE_HZ, RELEASE_TOKENS, TEXT_STREAM, TokenIds, delay_streams

TTS = "tts"
ASR = "asr"
DIALOG_LAYOUTS = ("asr_response_tts", "response_tts", "response_tts_free")


class LayoutError(ValueError):
    """Material that a layout cannot place (bad shapes, codes out of range, inconsistent timing)."""


class TranscriptTooLongError(LayoutError):
    """A sentence has more tokens than the frames its speech leaves for it (TTS style)."""


class SampleTooLongError(LayoutError):
    """A single pair does not fit in one sample."""


@dataclasses.dataclass(frozen=True)
class LayoutConfig:
    """Every choice of the layouts; defaults are the spec's (training.md sections 1-2)."""

    lead_frames: int = 2  # TTS style: speech begins this many frames after its text starts
    tts_ratio: float = 0.5  # post-training: fraction of pairs laid out TTS style (1:1 with ASR style)
    gap_s: tuple[float, float] = (0.2, 2.0)  # post-training: random silence before every pair
    sample_frames: int = 8192  # post-training samples are padded to this; no sample is longer
    pad_dialogs: bool = False  # dialogs: pad to sample_frames (else their own length, at most sample_frames)
    interruption_prob: float = 0.7  # free user inputs: probability that a dialog gets an interruption
    reaction_s: float = 0.5  # free user inputs: the model stops within this delay of the user's onset
    alignment: str = "contiguous"  # post-training text: "contiguous" sentences or "word" (Moshi-like ablation)

    def __post_init__(self) -> None:
        lo, hi = self.gap_s
        checks = {
            "lead_frames must be >= 0": self.lead_frames >= 0,
            "tts_ratio must lie in [0, 1]": 0.0 <= self.tts_ratio <= 1.0,
            "gap_s must be (low, high) with 0 <= low <= high": 0.0 <= lo <= hi,
            "sample_frames must be >= 2": self.sample_frames >= 2,
            "interruption_prob must lie in [0, 1]": 0.0 <= self.interruption_prob <= 1.0,
            "reaction_s must be >= 0": self.reaction_s >= 0.0,
            "alignment must be 'contiguous' or 'word'": self.alignment in ("contiguous", "word"),
        }
        for message, ok in checks.items():
            if not ok:
                raise ConfigError(f"LayoutConfig: {message}")

    @property
    def reaction_frames(self) -> int:
        """Whole frames of reaction: floor, so that the cut stays within the reaction delay (0.5 s -> 6)."""
        return int(math.floor(self.reaction_s * FRAME_RATE_HZ + 1e-9))


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


class Turn(TypedDict):
    """A dialog turn as the corpus gives it; frames count from the dialog's start."""

    role: str  # "user" | "model"
    codes: np.ndarray  # int32 [8, F]
    text_tokens: Sequence[int]
    start_frame: int
    end_frame: int  # start_frame + F


@dataclasses.dataclass
class Sample:
    """A laid-out training sample in raw coordinates.

    Each segment is a dict {kind, text, text_start, text_end, audio_start, audio_end, channel, source}
    (frames of the sample; `text` the token ids, placed on the text channel at [text_start, text_end) or
    not placed when text_start is None; `channel` "speak" | "listen" | None; `source` the index of the
    pair or turn whose codes fill the audio span). Dialog response segments add `cut_frame` (None when not
    interrupted) and user segments `interrupts`.
    """

    tokens: np.ndarray  # int32 [T, 17]
    weights: np.ndarray  # float32 [T, 17]
    segments: list[dict[str, Any]]
    layout: str


@dataclasses.dataclass(frozen=True)
class DialogPlan:
    """Where a dialog's turns go in a sample, before any token is written (see `plan_dialog`)."""

    layout: str
    segments: list[dict[str, Any]]
    num_frames: int  # content frames, the initial frame included


def frames(seconds: float) -> int:
    """Seconds -> the nearest whole number of 80 ms frames."""
    return int(round(seconds * FRAME_RATE_HZ))


def delay_sample(sample: Sample, ids: TokenIds = RELEASE_TOKENS) -> tuple[np.ndarray, np.ndarray]:
    """Tokens and weights in delayed columns [T + max_delay, 17]; columns outside a stream weigh 0."""
    zero = np.zeros((ids.num_streams,), dtype=sample.weights.dtype)
    return delay_streams(sample.tokens, ids), delay_streams(sample.weights, ids, fill=zero)


# --- Segments ----------------------------------------------------------------------------------------


def _segment(
    kind: str,
    *,
    text: Sequence[int] = (),
    text_start: int | None = None,
    audio_start: int | None = None,
    audio_frames: int = 0,
    channel: str | None = None,
    source: int | None = None,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "kind": kind,
        "text": tuple(int(t) for t in text),
        "text_start": text_start,
        "text_end": None if text_start is None else text_start + len(text),
        "audio_start": audio_start,
        "audio_end": None if audio_start is None else audio_start + audio_frames,
        "channel": channel,
        "source": source,
        **extra,
    }


def _segment_end(seg: dict[str, Any]) -> int:
    return max(e for e in (seg["text_end"], seg["audio_end"], 0) if e is not None)


def _clip_segments(segments: list[dict[str, Any]], num_frames: int) -> list[dict[str, Any]]:
    """Segments of a sample truncated to its first `num_frames` frames."""
    kept = []
    for seg in segments:
        starts = [s for s in (seg["text_start"], seg["audio_start"]) if s is not None]
        if starts and min(starts) >= num_frames:
            continue
        seg = dict(seg)
        if seg["text_start"] is not None and seg["text_end"] > num_frames:
            seg["text"] = seg["text"][: max(0, num_frames - seg["text_start"])]
            seg["text_end"] = seg["text_start"] + len(seg["text"])
        if seg["audio_end"] is not None:
            seg["audio_end"] = min(seg["audio_end"], num_frames)
        kept.append(seg)
    return kept


# --- Input checks ------------------------------------------------------------------------------------


def _codes(codes: np.ndarray, ids: TokenIds, what: str) -> np.ndarray:
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[0] != ids.num_codebooks or codes.shape[1] < 1:
        raise LayoutError(f"{what}: audio codes must have shape [{ids.num_codebooks}, frames>=1], got {codes.shape}")
    if not np.issubdtype(codes.dtype, np.integer):
        raise LayoutError(f"{what}: audio codes must be integers, got {codes.dtype}")
    if codes.min() < 0 or codes.max() >= ids.codebook_size:
        raise LayoutError(f"{what}: audio codes must lie in [0, {ids.codebook_size}), got [{codes.min()}, {codes.max()}]")
    return codes


def _text(tokens: Sequence[int], ids: TokenIds, what: str) -> tuple[int, ...]:
    tokens = tuple(int(t) for t in tokens)
    if not tokens:
        raise LayoutError(f"{what}: empty transcript")
    if min(tokens) < 0 or max(tokens) >= ids.text_vocab_size:
        raise LayoutError(f"{what}: text tokens must lie in [0, {ids.text_vocab_size})")
    return tokens


def _check_fits(num_tokens: int, num_frames: int, lead: int, what: str) -> None:
    if num_tokens > lead + num_frames:
        raise TranscriptTooLongError(
            f"{what}: {num_tokens} text tokens exceed the {lead + num_frames} frames its speech leaves "
            f"({num_frames} speech frames + lead {lead})"
        )


# --- Rendering: segments -> tokens and weights ---------------------------------------------------------


def _tiled(codes: np.ndarray, num_frames: int) -> np.ndarray:
    """[num_frames, 8] frames of `codes` [8, P] repeated by absolute frame index."""
    return codes[:, np.arange(num_frames) % codes.shape[1]].T


def _render(
    segments: list[dict[str, Any]],
    audio: Sequence[np.ndarray],
    content_frames: int,
    total_frames: int,
    ids: TokenIds,
    silence: np.ndarray | None = None,
    listen_codes: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Write segments onto a [total_frames, 17] canvas (see the module docstring for the fills).

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
        fill = _tiled(silence, content_frames)
        tokens[:content_frames, speak] = fill
        tokens[:content_frames, listen] = fill
        weights[:content_frames, speak] = 1.0
    if listen_codes is not None:
        tokens[1:content_frames, listen] = listen_codes[:, : content_frames - 1].T
    for seg in segments:
        if seg["text_start"] is not None:
            tokens[seg["text_start"] : seg["text_end"], TEXT_STREAM] = seg["text"]
        if seg["audio_start"] is None or (seg["channel"] == "listen" and listen_codes is not None):
            continue
        a0, a1 = seg["audio_start"], seg["audio_end"]
        streams = speak if seg["channel"] == "speak" else listen
        tokens[a0:a1, streams] = audio[seg["source"]][:, : a1 - a0].T
        if seg["channel"] == "speak":
            weights[a0:a1, streams] = 1.0
    tokens[0, : speak.stop] = ids.initial_column[: speak.stop]
    weights[0] = 0.0
    tokens[content_frames:, 1:] = ids.unused_audio_channel  # padding (text is <wait> already)
    return tokens[:total_frames], weights[:total_frames]


# --- Post-training: TTS and ASR styles ----------------------------------------------------------------


def _plan_contiguous(
    codes: np.ndarray, tokens: tuple[int, ...], style: str, start: int, source: int, lead: int, what: str
) -> list[dict[str, Any]]:
    """One sentence as a contiguous run: TTS (text leads its speech by `lead`) or ASR (text after the audio)."""
    n = codes.shape[1]
    if style == TTS:
        _check_fits(len(tokens), n, lead, what)
        return [_segment(TTS, text=tokens, text_start=start, audio_start=start + lead, audio_frames=n,
                         channel="speak", source=source)]
    return [_segment(ASR, text=tokens, text_start=start + n, audio_start=start, audio_frames=n,
                     channel="listen", source=source)]


def _plan_words(
    codes: np.ndarray, words: Sequence[WordTiming], style: str, start: int, source: int, lead: int,
    ids: TokenIds, what: str,
) -> list[dict[str, Any]]:
    """Moshi-like word-level alignment; `<wait>` pads between words (Moshi's PAD/EPAD are not in the vocabulary).

    TTS style: a word's tokens start at the frame its speech starts (floor), minus `lead`, so that text
    leads speech as in the contiguous TTS style. ASR style: a word's tokens start at the frame after it has
    been heard (ceil of its end). A word whose frame is still taken by the previous word's tokens follows
    them directly.
    """
    n = codes.shape[1]
    if not words:
        raise LayoutError(f"{what}: the word-level layout needs word timings")
    if style == TTS:
        audio = _segment(TTS, audio_start=start + lead, audio_frames=n, channel="speak", source=source)
    else:
        audio = _segment(ASR, audio_start=start, audio_frames=n, channel="listen", source=source)
    segments, cursor, previous = [audio], start, 0.0
    for k, word in enumerate(words):
        if not previous <= word.start_s <= word.end_s <= (n + 1) / FRAME_RATE_HZ:
            raise LayoutError(
                f"{what}: word {k} times ({word.start_s}, {word.end_s}) s are negative, out of order or past "
                f"the clip's {n / FRAME_RATE_HZ} s"
            )
        previous = word.start_s
        at = math.floor(word.start_s * FRAME_RATE_HZ) if style == TTS else math.ceil(word.end_s * FRAME_RATE_HZ)
        word_start = max(start + at, cursor)
        segments.append(_segment("word", text=_text(word.tokens, ids, f"{what} word {k}"), text_start=word_start))
        cursor = segments[-1]["text_end"]
    if style == TTS:
        _check_fits(cursor - start, n, lead, what)
    return segments


def _plan_pair(
    pair: AlignedPair, style: str, start: int, source: int, ids: TokenIds, cfg: LayoutConfig
) -> list[dict[str, Any]]:
    what = f"pair {source}"
    codes = _codes(pair.codes, ids, what)
    if cfg.alignment == "word":
        return _plan_words(codes, pair.words or (), style, start, source, cfg.lead_frames, ids, what)
    return _plan_contiguous(codes, _text(pair.text_tokens, ids, what), style, start, source, cfg.lead_frames, what)


def _single_pair(pair: AlignedPair, style: str, layout: str, ids: TokenIds, cfg: LayoutConfig) -> Sample:
    segments = _plan_pair(pair, style, 1, 0, ids, cfg)
    num_frames = max(_segment_end(s) for s in segments)
    if num_frames > cfg.sample_frames:
        raise SampleTooLongError(f"pair 0: {num_frames} frames exceed sample_frames {cfg.sample_frames}")
    tokens, weights = _render(segments, [np.asarray(pair.codes)], num_frames, num_frames, ids)
    return Sample(tokens, weights, segments, layout)


def layout_tts(
    codes: np.ndarray, text_tokens: Sequence[int], ids: TokenIds = RELEASE_TOKENS, cfg: LayoutConfig = LayoutConfig()
) -> Sample:
    """One sentence TTS style: text from frame 1, speech from frame 1 + lead, `<wait>` until the speech ends."""
    cfg = dataclasses.replace(cfg, alignment="contiguous")
    return _single_pair(AlignedPair(codes, text_tokens), TTS, TTS, ids, cfg)


def layout_asr(
    codes: np.ndarray, text_tokens: Sequence[int], ids: TokenIds = RELEASE_TOKENS, cfg: LayoutConfig = LayoutConfig()
) -> Sample:
    """One sentence ASR style: speech on listen from frame 1 (text `<wait>`), the sentence right after it."""
    cfg = dataclasses.replace(cfg, alignment="contiguous")
    return _single_pair(AlignedPair(codes, text_tokens), ASR, ASR, ids, cfg)


def layout_word_level(
    codes: np.ndarray,
    words: Sequence[WordTiming],
    style: str = TTS,
    ids: TokenIds = RELEASE_TOKENS,
    cfg: LayoutConfig = LayoutConfig(),
) -> Sample:
    """One clip with word-level text (the papers' Table 7 ablation), TTS or ASR style (see `_plan_words`)."""
    if style not in (TTS, ASR):
        raise LayoutError(f"style must be {TTS!r} or {ASR!r}, got {style!r}")
    cfg = dataclasses.replace(cfg, alignment="word")
    return _single_pair(AlignedPair(codes, (), words), style, f"word_{style}", ids, cfg)


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
    segments: list[dict[str, Any]] = []
    cursor, used = 1, 0
    for source, pair in enumerate(pairs):
        start = cursor + frames(rng.uniform(*cfg.gap_s))
        style = TTS if rng.random() < cfg.tts_ratio else ASR
        placed = _plan_pair(pair, style, start, source, ids, cfg)
        end = max(_segment_end(s) for s in placed)
        if end > cfg.sample_frames:
            break
        segments += placed
        cursor, used = end, used + 1
    if used == 0:
        if not pairs:
            raise LayoutError("assemble_post_training: no pairs given")
        raise SampleTooLongError(f"pair 0 needs {end} frames, more than sample_frames {cfg.sample_frames}")
    audio = [np.asarray(p.codes) for p in pairs[:used]]
    tokens, weights = _render(segments, audio, cursor, cfg.sample_frames, ids)
    return Sample(tokens, weights, segments, f"post_training_{cfg.alignment}"), used


# --- Fine-tuning: dialogs ------------------------------------------------------------------------------


def _check_turn(turn: Turn, index: int, ids: TokenIds) -> tuple[str, np.ndarray, tuple[int, ...]]:
    what = f"turn {index}"
    if turn["role"] not in ("user", "model"):
        raise LayoutError(f"{what}: role must be 'user' or 'model', got {turn['role']!r}")
    codes = _codes(turn["codes"], ids, what)
    if turn["end_frame"] - turn["start_frame"] != codes.shape[1]:
        raise LayoutError(
            f"{what}: end_frame - start_frame = {turn['end_frame'] - turn['start_frame']} but its codes have "
            f"{codes.shape[1]} frames"
        )
    return turn["role"], codes, _text(turn["text_tokens"], ids, what)


def plan_dialog(
    turns: Sequence[Turn],
    layout: str,
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
    if layout not in DIALOG_LAYOUTS:
        raise LayoutError(f"unknown dialog layout {layout!r}; one of {DIALOG_LAYOUTS}")
    if not turns:
        raise LayoutError(f"{layout}: the dialog has no turns")
    checked = [_check_turn(t, i, ids) for i, t in enumerate(turns)]
    roles = [role for role, _, _ in checked]
    lengths = [codes.shape[1] for _, codes, _ in checked]
    gaps = [turns[0]["start_frame"]] + [turns[i]["start_frame"] - turns[i - 1]["end_frame"] for i in range(1, len(turns))]
    lead, reaction = cfg.lead_frames, cfg.reaction_frames
    free = layout == "response_tts_free"

    def answered(i: int) -> bool:  # model turn i is followed by a user turn that can interrupt it
        return roles[i] == "model" and i + 1 < len(turns) and roles[i + 1] == "user" and lengths[i + 1] > reaction

    chosen = None
    if free and rng is None:
        raise LayoutError("response_tts_free needs a random generator")
    if free and rng.random() < cfg.interruption_prob:
        eligible = [i for i in range(len(turns)) if answered(i) and gaps[i + 1] >= 0 and lengths[i] > reaction]
        if eligible:
            chosen = eligible[int(rng.integers(len(eligible)))]

    segments: list[dict[str, Any]] = []
    end = 1  # first frame after everything placed so far
    heard: list[int] = []  # transcripts of the user turns since the last model turn
    onset = cut = None  # start of a user turn overlapping the model turn before it; where that turn stopped
    for i, (role, codes, text) in enumerate(checked):
        n = lengths[i]
        if role == "user":
            start = onset if onset is not None else end + max(gaps[i], 0)
            segments.append(_segment("user", text=text, audio_start=start, audio_frames=n, channel="listen",
                                     source=i, interrupts=cut is not None))
            end, onset, cut = max(end, start + n), None, None
            heard += text
            continue
        text_start = end if i and roles[i - 1] == "user" else end + max(gaps[i], 0)
        if layout == "asr_response_tts" and heard:
            span = (ids.text_asr, *heard, ids.text_answer)
            segments.append(_segment("asr", text=span, text_start=text_start))
            text_start += len(span)
        heard = []
        _check_fits(len(text), n, lead, f"turn {i}")
        speech_start = text_start + lead
        cut = None
        if free and i == chosen:
            onset = speech_start + int(rng.integers(n - reaction))
        elif free and i + 1 < len(turns) and roles[i + 1] == "user" and gaps[i + 1] < 0:
            onset = max(speech_start, speech_start + n + gaps[i + 1])
        if onset is not None and answered(i) and onset + reaction < speech_start + n:
            cut = onset + reaction
        kept_text = text if cut is None else text[: max(0, cut - text_start)]
        spoken = n if cut is None else cut - speech_start
        segments.append(_segment("response", text=kept_text, text_start=text_start, audio_start=speech_start,
                                 audio_frames=spoken, channel="speak", source=i, cut_frame=cut))
        end = speech_start + spoken
    return DialogPlan(layout, segments, max(_segment_end(s) for s in segments))


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
    """
    silence = _codes(silence_codes, ids, "silence_codes")
    if listen_codes is not None:
        listen_codes = _codes(listen_codes, ids, "listen_codes")
        if listen_codes.shape[1] < plan.num_frames - 1:
            raise LayoutError(f"listen_codes has {listen_codes.shape[1]} frames, the plan needs {plan.num_frames - 1}")
    total = cfg.sample_frames if cfg.pad_dialogs else min(plan.num_frames, cfg.sample_frames)
    audio = [np.asarray(t["codes"]) for t in turns]
    tokens, weights = _render(plan.segments, audio, plan.num_frames, total, ids, silence, listen_codes)
    return Sample(tokens, weights, _clip_segments(plan.segments, total), plan.layout)


def layout_asr_response_tts(
    turns: Sequence[Turn], silence_codes: np.ndarray, ids: TokenIds = RELEASE_TOKENS, cfg: LayoutConfig = LayoutConfig()
) -> Sample:
    """Fine-tuning-1 (semi-duplex): `<asr>` transcript `<answer>` response after each user turn."""
    return render_dialog(plan_dialog(turns, "asr_response_tts", None, ids, cfg), turns, silence_codes, ids, cfg)


def layout_response_tts(
    turns: Sequence[Turn], silence_codes: np.ndarray, ids: TokenIds = RELEASE_TOKENS, cfg: LayoutConfig = LayoutConfig()
) -> Sample:
    """Fine-tuning-2: the response text starts when the user turn ends (no ASR span)."""
    return render_dialog(plan_dialog(turns, "response_tts", None, ids, cfg), turns, silence_codes, ids, cfg)


def layout_response_tts_free(
    turns: Sequence[Turn],
    silence_codes: np.ndarray,
    rng: np.random.Generator,
    ids: TokenIds = RELEASE_TOKENS,
    cfg: LayoutConfig = LayoutConfig(),
) -> Sample:
    """Fine-tuning-2 with free user inputs: Response-TTS plus interruptions (see `plan_dialog`)."""
    return render_dialog(plan_dialog(turns, "response_tts_free", rng, ids, cfg), turns, silence_codes, ids, cfg)
