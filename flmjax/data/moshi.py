"""kyutai's moshi-finetune dataset format as a corpus: stereo conversations with word alignments.

`moshi:FILE.jsonl` names moshi-finetune's JSONL, one `{"path": WAV (relative to the JSONL's folder),
"duration": seconds}` per line. Each WAV is stereo, left channel the model, right channel the user, with a
sibling alignment file (same name, `.json`): `{"alignments": [[word, [start, end], speaker], ...]}`, the
words of the model's channel as moshi-finetune's `annotate.py` writes them (speaker "SPEAKER_MAIN"; when
that label occurs, words of other speakers are left out, as moshi-finetune's `keep_main_only` does).
Words with end <= start are dropped, as moshi-finetune drops them; words outside the audio are an error.

A recording becomes one dialog record per window of `sample_frames - 1` frames (the sample's frame 0 is
the decoder's initial frame; a last window under `MIN_WINDOW_FRAMES` is dropped): speak = the left
channel's Mimi codes (weighted throughout, its silences included, like every dialog layout), listen =
the right channel's, text = the model's words, laid out by `LayoutConfig.alignment`:
- "contiguous" (FLM-Audio's natural monologue): the words are grouped into sentences (a new one after a
  silence over `sentence_gap_s`, or after a word ending a sentence), each sentence's tokens contiguous
  from `lead_frames` before its first word is heard, later when the previous sentence's text still runs;
- "word" (Moshi's word-level alignment): each word's tokens from `lead_frames` before the word starts.
`<wait>` everywhere else. The plans say layout "recorded": they come from the recording's own timing,
so any dialog stage reads these records.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from flmjax.data import layouts
from flmjax.data.corpus import CorpusError
from flmjax.data.layouts import Channel, Layout, LayoutConfig, Segment, SegmentKind
from flmjax.tokens import FRAME_RATE_HZ, SAMPLE_RATE

PREFIX = "moshi:"
MAIN_SPEAKER = "SPEAKER_MAIN"
MIN_WINDOW_FRAMES = 13  # ~1 s: a shorter tail of a recording is not worth a padded sample
TOLERANCE_S = 0.1  # words may end this much past the audio (alignment rounding)
SENTENCE_END = (".", "?", "!", "…", "。", "？", "！")


@dataclasses.dataclass(frozen=True)
class AlignedWord:
    text: str
    start: float
    end: float


@dataclasses.dataclass(frozen=True)
class Recording:
    """One line of the JSONL with its alignment file read and checked (the audio is read later)."""

    id: str
    path: str
    alignment: str
    duration: float
    words: tuple[AlignedWord, ...]


@dataclasses.dataclass
class LoadedRecording:
    meta: dict[str, Any]
    left: np.ndarray  # mono float32 at 24 kHz: the model
    right: np.ndarray  # the user
    words: tuple[AlignedWord, ...]


def _words(alignment: Path, duration: float) -> tuple[AlignedWord, ...]:
    try:
        data = json.loads(alignment.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CorpusError(f"{alignment}: alignment file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorpusError(f"{alignment}: not valid JSON ({e})") from None
    items = data.get("alignments") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise CorpusError(f"{alignment}: no 'alignments' list")
    parsed = []
    for k, item in enumerate(items):
        ok = isinstance(item, list) and len(item) == 3 and isinstance(item[0], str) and isinstance(item[2], str)
        span = item[1] if ok else []
        ok = ok and isinstance(span, list) and len(span) == 2
        ok = ok and all(isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t) for t in span)
        if not ok:
            raise CorpusError(f"{alignment}: alignment {k} is not [word, [start, end], speaker]: {item!r}")
        parsed.append((item[0].strip(), float(span[0]), float(span[1]), item[2]))
    main = any(speaker == MAIN_SPEAKER for *_, speaker in parsed)
    words = []
    for k, (text, start, end, speaker) in enumerate(parsed):
        if (main and speaker != MAIN_SPEAKER) or end <= start or not text:
            continue
        if start < 0 or end > duration + TOLERANCE_S:
            raise CorpusError(
                f"{alignment}: word {k} {text!r} at {start}..{end} s lies outside the audio (0..{duration} s)"
            )
        words.append(AlignedWord(text, start, end))
    return tuple(sorted(words, key=lambda w: w.start))


def read_recordings(spec: str) -> list[Recording | CorpusError]:
    """`moshi:FILE.jsonl` -> one recording (or the error naming its file) per non-empty line."""
    path = Path(spec.removeprefix(PREFIX))
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise CorpusError(f"{path}: moshi-finetune JSONL not found") from None
    out: list[Recording | CorpusError] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path.name}:{n}"
        try:
            obj = json.loads(line)
            if not isinstance(obj, dict) or not isinstance(obj.get("path"), str):
                raise CorpusError(f'{where}: expected {{"path": WAV, "duration": seconds}}')
            duration = obj.get("duration")
            if isinstance(duration, bool) or not isinstance(duration, (int, float)) or not duration > 0:
                raise CorpusError(f"{where} ({obj['path']}): duration must be a number of seconds > 0")
            audio = path.parent / obj["path"]
            alignment = audio.with_suffix(".json")
            words = _words(alignment, float(duration))
            out.append(Recording(obj["path"], str(audio), str(alignment), float(duration), words))
        except json.JSONDecodeError as e:
            out.append(CorpusError(f"{where}: not valid JSON ({e.msg})"))
        except CorpusError as e:
            out.append(e)
    if not any(isinstance(r, Recording) for r in out):
        raise CorpusError(f"{path}: no usable recording ({out[0] if out else 'empty file'})")
    return out


def _pieces(words: tuple[AlignedWord, ...], tok: Any, cfg: LayoutConfig) -> list[tuple[list[int], float]]:
    """Token runs and when they are heard: one per word ("word") or per sentence ("contiguous")."""
    if cfg.alignment == "word":
        return [(tok.encode((" " if k else "") + w.text), w.start) for k, w in enumerate(words)]
    sentences: list[list[AlignedWord]] = []
    for w in words:
        previous = sentences[-1][-1] if sentences else None
        if previous is None or w.start - previous.end > cfg.sentence_gap_s or previous.text.endswith(SENTENCE_END):
            sentences.append([w])
        else:
            sentences[-1].append(w)
    return [(tok.encode(" ".join(w.text for w in s)), s[0].start) for s in sentences]


def load_recording(rec: Recording, where: str) -> LoadedRecording:
    """Worker: both channels at 24 kHz, or a `CorpusError` naming the file."""
    from flmjax import audio

    try:
        pcm, sr = audio.load_audio(rec.path)
    except FileNotFoundError:
        raise CorpusError(f"{where}: audio file not found: {rec.path}") from None
    except (audio.AudioError, OSError) as e:
        raise CorpusError(f"{where}: {e}") from None
    if pcm.shape[0] != 2:
        raise CorpusError(
            f"{where}: {rec.path} has {pcm.shape[0]} channel(s); moshi-finetune files are stereo "
            "(left: the model, right: the user)"
        )
    if not np.all(np.isfinite(pcm)):
        raise CorpusError(f"{where}: {rec.path} holds NaN or infinite samples")
    left, right = (audio.prepare_for_mimi(pcm[c], sr)[0] for c in (0, 1))
    seconds = len(left) / SAMPLE_RATE
    late = [w for w in rec.words if w.end > seconds + TOLERANCE_S]
    if late:
        raise CorpusError(
            f"{where}: {rec.alignment}: word {late[0].text!r} ends at {late[0].end} s, past the audio's {seconds:.2f} s"
        )
    meta = {"id": rec.id, "audio": rec.path, "duration": seconds}
    return LoadedRecording(meta, left, right, rec.words)


def window_plan(
    pieces: list[tuple[list[int], float]], first: int, frames: int, cfg: LayoutConfig
) -> tuple[layouts.DialogPlan, list[int]]:
    """The plan of the window of recording frames [first, first + frames): speak (source 0) and listen
    (source 1) throughout, the text pieces heard in it placed `lead_frames` ahead; and its text tokens."""
    segments = [
        Segment.place(SegmentKind.RESPONSE, audio_start=1, audio_frames=frames, channel=Channel.SPEAK, source=0),
        Segment.place(SegmentKind.USER, audio_start=1, audio_frames=frames, channel=Channel.LISTEN, source=1),
    ]
    kind = SegmentKind.WORD if cfg.alignment == "word" else SegmentKind.RESPONSE
    cursor, text = 1, []
    for tokens, start_s in pieces:
        heard = math.floor(start_s * FRAME_RATE_HZ) - first
        if not 0 <= heard < frames:
            continue
        start = max(cursor, heard + 1 - cfg.lead_frames, 1)
        tokens = tokens[: max(0, frames + 1 - start)]
        if not tokens:
            continue
        segments.append(Segment.place(kind, text=tokens, text_start=start))
        cursor = start + len(tokens)
        text += tokens
    return layouts.DialogPlan(Layout.RECORDED, segments, frames + 1), text


def recording_records(
    loaded: list[LoadedRecording], left: list[np.ndarray], right: list[np.ndarray], cfg: LayoutConfig, tok: Any
) -> list[bytes]:
    """Dialog records, one per window, of recordings whose channels are encoded as `left`/`right` codes."""
    from flmjax.data import records

    window = cfg.sample_frames - 1
    out = []
    for rec, speak, listen in zip(loaded, left, right):
        pieces = _pieces(rec.words, tok, cfg)
        total = min(speak.shape[1], listen.shape[1])
        for k, first in enumerate(range(0, total, window)):
            n = min(window, total - first)
            if n < MIN_WINDOW_FRAMES and k:
                break
            plan, text = window_plan(pieces, first, n, cfg)
            turns = [
                layouts.Turn(
                    role="model", codes=speak[:, first : first + n], text_tokens=text, start_frame=0, end_frame=n
                ),
                layouts.Turn(
                    role="user", codes=listen[:, first : first + n], text_tokens=[], start_frame=0, end_frame=n
                ),
            ]
            meta = dict(rec.meta, id=f"{rec.meta['id']}#{k}", window=k, start_s=first / FRAME_RATE_HZ)
            out.append(records.dialog_record(meta, turns, [plan], [None]))
    return out
