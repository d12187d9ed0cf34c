"""Reading a corpus's entries (in worker processes): audio -> mono float32 at 24 kHz, cut into segments or
turns, text -> token ids; every problem a `CorpusError` naming the entry and the file.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import multiprocessing
from pathlib import Path
from typing import Any

import numpy as np

from flmjax.data import augment as aug
from flmjax.data import layouts, moshi
from flmjax.data.corpus import AudioRef, CorpusError, DialogEntry, SpeechEntry
from flmjax.data.encoding import num_frames
from flmjax.data.sources import ExampleRef, dataset
from flmjax.data.text_tokenizer import named_tokenizer
from flmjax.storage import StorageError
from flmjax.tokens import SAMPLE_RATE


def read_audio(ref: AudioRef, where: str) -> np.ndarray:
    """Mono float32 [N] at 24 kHz of an audio reference (a span is cut after resampling)."""
    from flmjax import audio

    if ref.samples is not None:
        assert ref.sample_rate is not None  # in-memory samples come with their rate (corpus.AudioRef)
        pcm, sr = ref.samples, ref.sample_rate
    else:
        assert ref.path is not None  # an AudioRef is a file or samples
        try:
            pcm, sr = audio.load_audio(ref.path)
        except FileNotFoundError:
            raise CorpusError(f"{where}: audio file not found: {ref.path}") from None
        except (audio.AudioError, OSError, StorageError) as e:  # corrupt, empty, unreadable: the message names the file
            raise CorpusError(f"{where}: {e}") from None
    if pcm.shape[-1] == 0:
        raise CorpusError(f"{where}: empty audio {ref.describe()}")
    pcm = audio.prepare_for_mimi(pcm, sr)[0]
    if not np.all(np.isfinite(pcm)):
        raise CorpusError(f"{where}: audio {ref.describe()} holds NaN or infinite samples")
    if ref.span is not None:
        pcm = cut(pcm, *ref.span, f"{where} audio span")
    return pcm


def cut(pcm: np.ndarray, start: float, end: float, where: str) -> np.ndarray:
    duration = len(pcm) / SAMPLE_RATE
    if end > duration + 1e-3:
        raise CorpusError(f"{where}: ends at {end:.3f} s, past the audio's {duration:.3f} s")
    clip = pcm[int(round(start * SAMPLE_RATE)) : int(round(end * SAMPLE_RATE))]
    if clip.size == 0:
        raise CorpusError(f"{where}: empty span ({start}..{end} s)")
    return clip


@dataclasses.dataclass
class Clip:
    pcm: np.ndarray
    tokens: list[int]
    words: list[layouts.WordTiming] | None
    meta: dict[str, Any]


@dataclasses.dataclass
class LoadedSpeech:
    clips: list[Clip]
    errors: list[str]


@dataclasses.dataclass
class LoadedDialog:
    meta: dict[str, Any]
    waves: list[np.ndarray]
    roles: list[str]
    tokens: list[list[int]]
    start_frames: list[int]


def _word_timings(entry: SpeechEntry, seg_index: int, tok: Any) -> list[layouts.WordTiming] | None:
    """Word timings relative to the clip; a word after whitespace is tokenised with its leading space,
    so that the words' tokens concatenate to the sentence's tokens."""
    seg = entry.segments[seg_index]
    if not seg.words:
        return None
    out: list[layouts.WordTiming] = []
    cursor = 0
    for w in seg.words:
        at = seg.text.find(w.text, cursor)
        spaced = (at > 0 and seg.text[at - 1].isspace()) if at >= 0 else bool(out)
        cursor = at + len(w.text) if at >= 0 else cursor
        out.append(
            layouts.WordTiming(tok.encode((" " if spaced else "") + w.text), w.start - seg.start, w.end - seg.start)
        )
    return out


def _load_speech(entry: SpeechEntry, where: str, lead: int, tokenizer: str) -> LoadedSpeech:
    tok, _ = named_tokenizer(tokenizer)
    pcm = read_audio(entry.audio, where)
    clips, errors = [], []
    for k, seg in enumerate(entry.segments):
        swhere = f"{where} segment {k}"
        try:
            clip = cut(pcm, seg.start, seg.end, swhere)
            tokens = tok.encode(seg.text)
            frames = num_frames(len(clip))
            if len(tokens) > frames + lead:  # the TTS layout's rule: text must fit beside its speech
                raise CorpusError(
                    f"{swhere}: transcript of {len(tokens)} tokens is longer than its audio can carry "
                    f"({frames} frames of {len(clip) / SAMPLE_RATE:.2f} s + lead {lead})"
                )
        except CorpusError as e:
            errors.append(str(e))
            continue
        meta = {"id": f"{entry.id}/{k}", "entry": entry.id, "language": entry.language, "source": entry.source,
                "text": seg.text, "audio": entry.audio.describe(), "start": seg.start, "end": seg.end}  # fmt: skip
        clips.append(Clip(clip, tokens, _word_timings(entry, k, tok), meta))
    return LoadedSpeech(clips, errors)


def _load_dialog(entry: DialogEntry, where: str, tokenizer: str) -> LoadedDialog:
    tok, _ = named_tokenizer(tokenizer)
    waves, starts = [], []
    cache: dict[str, np.ndarray] = {}  # turns that are spans of one recording read it once
    for k, turn in enumerate(entry.turns):
        twhere = f"{where} turn {k}"
        ref = turn.audio
        if ref.span is not None and ref.path is not None:
            if ref.path not in cache:
                cache[ref.path] = read_audio(dataclasses.replace(ref, start=None, end=None), twhere)
            wave = cut(cache[ref.path], *ref.span, f"{twhere} audio span")
        else:
            wave = read_audio(ref, twhere)
        if turn.end is not None:  # a turn that ends before its audio does is cut (an interrupted model)
            wave = wave[: max(1, int(round((turn.end - turn.start) * SAMPLE_RATE)))]
        waves.append(wave)
        starts.append(layouts.frames(turn.start))
    meta = {"id": entry.id, "language": entry.language, "texts": [t.text for t in entry.turns]}
    return LoadedDialog(meta, waves, [t.role for t in entry.turns], [tok.encode(t.text) for t in entry.turns], starts)


def load_entry(task: tuple[Any, str, int, str]) -> LoadedSpeech | LoadedDialog | moshi.LoadedRecording | CorpusError:
    """Worker: (entry or dataset example, where, lead frames, tokenizer name) -> its audio at 24 kHz and its
    tokens, or the error."""
    entry, where, lead, tokenizer = task
    try:
        if isinstance(entry, CorpusError):
            return entry
        if isinstance(entry, ExampleRef):
            entry = dataset(entry.spec)[entry.index]
            where = f"{where} ({entry.id})"
        if isinstance(entry, moshi.Recording):
            return moshi.load_recording(entry, where)
        if isinstance(entry, SpeechEntry):
            return _load_speech(entry, where, lead, tokenizer)
        return _load_dialog(entry, where, tokenizer)
    except CorpusError as e:
        return e


class NoiseBank:
    """Noise clips for augmentation: audio files of a folder, or synthetic white/pink/brown noise."""

    def __init__(self, noise_dir: str | None, seed: int):
        if noise_dir is None:
            rng = np.random.default_rng(seed)
            self.clips = [aug.synthetic_noise(kind, 10 * SAMPLE_RATE, rng) for kind in aug.NOISE_KINDS]
            return
        files = sorted(p for p in Path(noise_dir).rglob("*") if p.suffix.lower() in (".wav", ".flac", ".mp3", ".ogg"))
        if not files:
            raise CorpusError(f"{noise_dir}: no noise audio files (.wav, .flac, .mp3, .ogg)")
        self.clips = [read_audio(AudioRef(path=str(p)), "noise") for p in files]


def reader_pool(workers: int) -> concurrent.futures.Executor | None:
    """Worker processes for reading audio ('spawn': the parent may run JAX, which forking can deadlock)."""
    if workers <= 1:
        return None
    return concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
