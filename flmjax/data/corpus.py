"""Corpus formats: what a user hands to `launch/prepare_data.py` (documented with examples in docs/data.md).

Two manifest kinds, JSON Lines, one entry per line, audio paths relative to the manifest's folder:

- sentence-aligned speech (post-training): one audio file with its sentence segments
  `{"id", "audio", "language", "source": "auto"|"human", "segments": [{"start", "end", "text",
  "words"?: [{"start", "end", "text"}]}]}` (seconds from the file's start);
- dialogs (fine-tuning): `{"id", "language"?, "turns": [{"role": "user"|"model", "text", "audio",
  "start", "end"?}]}`, `audio` a file or a span `{"path", "start", "end"}` of one, `start`/`end` the turn's
  place on the dialog's timeline (seconds). A turn whose `end` comes before its audio does is cut there
  (a model that stops talking when interrupted); user speech may overlap model speech.

Two more inputs are datasets already on disk, mapped to sentence-aligned entries (one segment spanning each
example): a TFDS dataset (e.g. `librispeech`), read through `tensorflow_datasets`, and a Hugging Face
`datasets` audio dataset (a `save_to_disk` folder, or a folder of parquet/arrow files), read through `datasets`.
Parsing checks everything that can be checked without the audio and raises `CorpusError` naming the
manifest line; the audio itself is checked when it is read (`flmjax.data.loading`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from flmjax import storage
from flmjax.errors import FlmjaxError

SOURCES = ("auto", "human")  # transcript quality tag: automatic (ASR) or human-annotated
ROLES = ("user", "model")


class CorpusError(FlmjaxError):
    """A manifest entry that cannot be prepared; the message names the entry and the problem."""


@dataclasses.dataclass(frozen=True)
class Word:
    start: float  # seconds, on the same clock as the segment
    end: float
    text: str


@dataclasses.dataclass(frozen=True)
class Segment:
    start: float  # seconds from the audio's start
    end: float
    text: str
    words: tuple[Word, ...] | None = None


@dataclasses.dataclass(frozen=True)
class AudioRef:
    """Audio of an entry: a file (optionally a span of it) or, for TFDS, samples already in memory."""

    path: str | None = None
    start: float | None = None  # span of the file, seconds
    end: float | None = None
    samples: np.ndarray | None = dataclasses.field(default=None, compare=False, repr=False)
    sample_rate: int | None = None  # with `samples`

    @property
    def span(self) -> tuple[float, float] | None:
        """(start, end) s of the file to cut, or None: all of it."""
        return None if self.start is None or self.end is None else (self.start, self.end)

    def describe(self) -> str:
        if self.path is None:
            return "<in-memory audio>"
        return self.path if self.start is None else f"{self.path}[{self.start}:{self.end}]"


@dataclasses.dataclass(frozen=True)
class SpeechEntry:
    """Sentence-aligned speech: every segment becomes one (audio clip, sentence) pair."""

    id: str
    audio: AudioRef
    language: str
    source: str
    segments: tuple[Segment, ...]


@dataclasses.dataclass(frozen=True)
class DialogTurn:
    role: str
    text: str
    audio: AudioRef
    start: float  # seconds on the dialog's timeline
    end: float | None = None  # None: start + the audio's duration


@dataclasses.dataclass(frozen=True)
class DialogEntry:
    id: str
    language: str
    turns: tuple[DialogTurn, ...]


Entry = SpeechEntry | DialogEntry


def entry_kind(entry: Entry) -> str:
    return "speech" if isinstance(entry, SpeechEntry) else "dialogs"


# --- JSONL manifests -----------------------------------------------------------------------------------


def _field(obj: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str, default: Any = ...) -> Any:
    if key not in obj:
        if default is ...:
            raise CorpusError(f"{where}: missing field {key!r}")
        return default
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, kind):
        raise CorpusError(f"{where}: field {key!r} must be {getattr(kind, '__name__', kind)}, got {value!r}")
    return value


def _time_or_none(obj: Mapping[str, Any], key: str, where: str, default: Any = ...) -> float | None:
    value = _field(obj, key, (int, float), where, default)
    if value is None:
        return None
    if not math.isfinite(value) or value < 0:
        raise CorpusError(f"{where}: {key} must be a finite time >= 0 s, got {value}")
    return float(value)


def _time(obj: Mapping[str, Any], key: str, where: str) -> float:
    value = _time_or_none(obj, key, where)
    if value is None:
        raise CorpusError(f"{where}: field {key!r} must be a time in s, got null")
    return value


def _span(start: float, end: float, where: str) -> None:
    if end <= start:
        raise CorpusError(f"{where}: end {end} s is not after start {start} s")


def _audio(value: Any, base: Path, where: str) -> AudioRef:
    if isinstance(value, str):
        return AudioRef(path=str(base / value))
    if isinstance(value, Mapping):
        start, end = _time(value, "start", where), _time(value, "end", where)
        _span(start, end, f"{where} audio span")
        return AudioRef(path=str(base / _field(value, "path", str, where)), start=start, end=end)
    raise CorpusError(f"{where}: audio must be a path or {{path, start, end}}, got {value!r}")


def _text(obj: Mapping[str, Any], where: str) -> str:
    text = _field(obj, "text", str, where).strip()
    if not text:
        raise CorpusError(f"{where}: empty text")
    return text


def _objects(obj: Mapping[str, Any], key: str, where: str, label: str) -> Iterator[tuple[Mapping[str, Any], str]]:
    """The objects of a non-empty list field, each with its place for messages ("... segment 2")."""
    items = _field(obj, key, list, where)
    if not items:
        raise CorpusError(f"{where}: no {key}")
    for k, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise CorpusError(f"{where} {label} {k}: must be an object")
        yield item, f"{where} {label} {k}"


def _named(obj: Mapping[str, Any], where: str) -> tuple[str, str]:
    uid = str(_field(obj, "id", (str, int), where))
    return uid, f"{where} ({uid})"


def _words(seg_obj: Mapping[str, Any], seg: Segment, where: str) -> tuple[Word, ...]:
    words, previous = [], seg.start
    for w, wwhere in _objects(seg_obj, "words", where, "word"):
        start, end = _time(w, "start", wwhere), _time(w, "end", wwhere)
        if not previous - 1e-3 <= start <= end <= seg.end + 1e-3:
            raise CorpusError(f"{wwhere}: times ({start}, {end}) s out of order or outside the segment")
        previous = start
        words.append(Word(start, end, _text(w, wwhere)))
    return tuple(words)


def parse_speech(obj: Mapping[str, Any], base: Path, where: str) -> SpeechEntry:
    uid, where = _named(obj, where)
    source = _field(obj, "source", str, where, "auto")
    if source not in SOURCES:
        raise CorpusError(f"{where}: source must be one of {SOURCES}, got {source!r}")
    segments = []
    for s, swhere in _objects(obj, "segments", where, "segment"):
        seg = Segment(_time(s, "start", swhere), _time(s, "end", swhere), _text(s, swhere))
        _span(seg.start, seg.end, swhere)
        if s.get("words") is not None:
            seg = dataclasses.replace(seg, words=_words(s, seg, swhere))
        segments.append(seg)
    return SpeechEntry(
        uid, _audio(obj.get("audio"), base, where), _field(obj, "language", str, where, "und"), source, tuple(segments)
    )


def parse_dialog(obj: Mapping[str, Any], base: Path, where: str) -> DialogEntry:
    uid, where = _named(obj, where)
    turns: list[DialogTurn] = []
    for t, twhere in _objects(obj, "turns", where, "turn"):
        role = _field(t, "role", str, twhere)
        if role not in ROLES:
            raise CorpusError(f"{twhere}: role must be one of {ROLES}, got {role!r}")
        turn = DialogTurn(
            role,
            _text(t, twhere),
            _audio(t.get("audio"), base, twhere),
            _time(t, "start", twhere),
            _time_or_none(t, "end", twhere, None),
        )
        if turn.end is not None:
            _span(turn.start, turn.end, twhere)
        if turns and turn.start < turns[-1].start:
            raise CorpusError(f"{twhere}: starts at {turn.start} s, before the previous turn")
        turns.append(turn)
    return DialogEntry(uid, _field(obj, "language", str, where, "und"), tuple(turns))


def parse_entry(obj: Any, base: Path, where: str) -> Entry:
    """One manifest object -> an entry; dialogs have `turns`, sentence-aligned speech `segments`."""
    if not isinstance(obj, Mapping):
        raise CorpusError(f"{where}: an entry must be a JSON object")
    if "turns" in obj:
        return parse_dialog(obj, base, where)
    if "segments" in obj:
        return parse_speech(obj, base, where)
    raise CorpusError(f"{where}: neither 'segments' (sentence-aligned speech) nor 'turns' (dialog)")


def read_manifest(path: str | os.PathLike) -> tuple[str, list[Entry | CorpusError]]:
    """A JSONL manifest -> (kind, one entry or error per non-empty line, in order).

    The kind ("speech" or "dialogs") is the first valid entry's; a line of the other kind is an error.
    Errors are returned in place, not raised, so that the rest of a corpus can still be prepared.
    """
    manifest = storage.path(path)
    try:
        lines = storage.read_bytes(manifest).decode("utf-8").splitlines()
    except FileNotFoundError:
        raise CorpusError(f"{path}: manifest not found") from None
    except UnicodeDecodeError as e:
        raise CorpusError(f"{path}: not UTF-8 text ({e})") from None
    items: list[Entry | CorpusError] = []
    kind = None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{manifest.name}:{n}"
        try:
            entry = parse_entry(json.loads(line), manifest.parent, where)
            if kind is None:
                kind = entry_kind(entry)
            elif entry_kind(entry) != kind:
                raise CorpusError(f"{where}: a {entry_kind(entry)} entry in a {kind} manifest")
            items.append(entry)
        except json.JSONDecodeError as e:
            items.append(CorpusError(f"{where}: not valid JSON ({e.msg})"))
        except CorpusError as e:
            items.append(e)
    if kind is None:
        raise CorpusError(f"{path}: no valid entry")
    return kind, items


# --- TFDS datasets ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TfdsSpec:
    """A TFDS dataset on disk, mapped to sentence-aligned speech (one segment per example).

    `name` is the builder name (`librispeech`, or `name/config`), `data_dir` the TFDS data folder
    (local or a bucket path that `tensorflow_datasets` reads). Feature keys default to LibriSpeech's.
    """

    name: str
    split: str = "train"
    data_dir: str | None = None
    audio_key: str = "speech"
    text_key: str = "text"
    id_key: str | None = "id"
    language: str = "en"
    source: str = "human"
    sample_rate: int | None = None  # None: the audio feature's own `sample_rate`

    @classmethod
    def parse(cls, spec: str, **options: Any) -> TfdsSpec:
        """`tfds:NAME[:SPLIT]` (as prepare_data's corpus argument) -> a spec."""
        body = spec.removeprefix("tfds:")
        name, _, split = body.partition(":")
        if not name:
            raise CorpusError(f"{spec!r}: expected tfds:NAME[:SPLIT]")
        return cls(name=name, split=split or "train", **{k: v for k, v in options.items() if v is not None})


class TfdsSpeech(Sequence[SpeechEntry]):
    """Random access to a TFDS dataset's examples as `SpeechEntry`s (audio kept in memory).

    Reading goes through `tfds.data_source` (ArrayRecord files, no TensorFlow pipeline); TFDS itself
    needs TensorFlow installed to describe `Audio` features.
    """

    def __init__(self, spec: TfdsSpec):
        import tensorflow_datasets as tfds  # heavy and only needed here

        self.spec = spec
        try:
            builder = tfds.builder(spec.name, data_dir=spec.data_dir)
            self._source = builder.as_data_source(split=spec.split)
        except Exception as e:  # TFDS raises a zoo of types for a missing dataset or split
            raise CorpusError(f"tfds:{spec.name}:{spec.split} in {spec.data_dir}: cannot open ({e})") from None
        features = builder.info.features
        for key in (spec.audio_key, spec.text_key) + ((spec.id_key,) if spec.id_key else ()):
            if key not in features:
                raise CorpusError(f"tfds:{spec.name}: no feature {key!r} (features: {', '.join(features)})")
        rate = spec.sample_rate or getattr(features[spec.audio_key], "sample_rate", None)
        if not rate:
            raise CorpusError(f"tfds:{spec.name}: feature {spec.audio_key!r} has no sample rate; give one")
        self.sample_rate = int(rate)

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> SpeechEntry:  # type: ignore[override]
        example = self._source[index]
        uid = _as_str(example[self.spec.id_key]) if self.spec.id_key else str(index)
        where = f"tfds:{self.spec.name}:{self.spec.split}[{index}] ({uid})"
        samples = _pcm_from_ints(np.asarray(example[self.spec.audio_key]))
        text = _as_str(example[self.spec.text_key]).strip()
        if not text:
            raise CorpusError(f"{where}: empty text")
        duration = samples.shape[-1] / self.sample_rate
        audio = AudioRef(path=None, samples=samples, sample_rate=self.sample_rate)
        return SpeechEntry(uid, audio, self.spec.language, self.spec.source, (Segment(0.0, max(duration, 1e-9), text),))


def _as_str(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _pcm_from_ints(samples: np.ndarray) -> np.ndarray:
    """TFDS audio ([N] or [N, C]; integers are 16-bit PCM values whatever their dtype, as TFDS's `Audio`
    feature stores them) -> float32 [C, N] in [-1, 1]."""
    if np.issubdtype(samples.dtype, np.integer):
        samples = samples.astype(np.float32) / np.float32(32768.0)
    samples = samples.astype(np.float32)
    return samples[None, :] if samples.ndim == 1 else samples.T


# --- Hugging Face datasets ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class HfSpec:
    """A Hugging Face `datasets` audio dataset on disk, mapped to sentence-aligned speech (one segment per
    example): a `save_to_disk` folder (memory-mapped where it is) or a folder of data files (parquet, arrow;
    `datasets` converts them once into its cache). Column names default to LibriSpeech's on the Hub."""

    path: str
    split: str | None = None  # None: the only split, or "train"
    audio_key: str = "audio"
    text_key: str = "text"
    id_key: str | None = "id"  # a missing column: the example's index
    language: str = "und"
    source: str = "human"

    @classmethod
    def parse(cls, spec: str, **options: Any) -> HfSpec:
        """`hf:PATH[:SPLIT]` (as prepare_data's corpus argument) -> a spec."""
        body = spec.removeprefix("hf:")
        path, sep, split = body.rpartition(":")
        if not sep or "/" in split or not path:  # no split given (or the ":" is part of the path)
            path, split = body, ""
        if not path:
            raise CorpusError(f"{spec!r}: expected hf:PATH[:SPLIT]")
        return cls(path=path, split=split or None, **{k: v for k, v in options.items() if v is not None})


class HfSpeech(Sequence[SpeechEntry]):
    """Random access to a `datasets` audio dataset's examples as `SpeechEntry`s (audio kept in memory).

    The audio column is read undecoded (file bytes, or a path) and decoded by `flmjax.audio`, so that a
    bad file is one entry's error, as for manifests, and `datasets`' own decoders are not needed.
    """

    def __init__(self, spec: HfSpec):
        import datasets  # only for this kind of corpus

        self.spec = spec
        path = Path(spec.path)
        try:
            if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
                data = datasets.load_from_disk(str(path))
            else:
                data = datasets.load_dataset(str(path))
        except (FileNotFoundError, ValueError, datasets.exceptions.DatasetNotFoundError) as e:
            raise CorpusError(f"hf:{spec.path}: cannot open ({e})") from None
        if isinstance(data, datasets.DatasetDict):
            split = spec.split or ("train" if "train" in data or len(data) != 1 else next(iter(data)))
            if split not in data:
                raise CorpusError(f"hf:{spec.path}: no split {split!r} (splits: {', '.join(data)})")
            data = data[split]
        elif spec.split is not None and spec.split != str(data.split or spec.split):
            raise CorpusError(f"hf:{spec.path}: holds one split ({data.split}), not {spec.split!r}")
        self.name = f"hf:{spec.path}" + (f":{spec.split}" if spec.split else "")
        for key in (spec.audio_key, spec.text_key):
            if key not in data.column_names:
                raise CorpusError(f"{self.name}: no column {key!r} (columns: {', '.join(data.column_names)})")
        if isinstance(data.features[spec.audio_key], datasets.Audio):
            data = data.cast_column(spec.audio_key, datasets.Audio(decode=False))
        self._data = data
        self._root = path

    def __len__(self) -> int:
        return len(self._data)

    def __getitem__(self, index: int) -> SpeechEntry:  # type: ignore[override]
        from flmjax import audio

        example = self._data[index]
        spec = self.spec
        uid = str(example[spec.id_key]) if spec.id_key and spec.id_key in example else str(index)
        where = f"{self.name}[{index}] ({uid})"
        text = example[spec.text_key]
        if not isinstance(text, str) or not text.strip():
            raise CorpusError(f"{where}: empty text")
        value = example[spec.audio_key]
        value = {"path": value} if isinstance(value, str) else value or {}
        try:
            if value.get("bytes"):
                samples, rate = audio.decode_audio(value["bytes"], value.get("path") or where)
            elif value.get("array") is not None:
                samples, rate = np.asarray(value["array"], np.float32), int(value["sampling_rate"])
            elif value.get("path"):
                file = self._root / value["path"]
                samples, rate = audio.load_audio(file if file.exists() else value["path"])
            else:
                raise CorpusError(f"{where}: no audio")
        except FileNotFoundError as e:
            raise CorpusError(f"{where}: {e}") from None
        except audio.AudioError as e:
            raise CorpusError(f"{where}: {e}") from None
        samples = samples[None, :] if samples.ndim == 1 else samples
        ref = AudioRef(path=None, samples=samples, sample_rate=rate)
        duration = samples.shape[-1] / rate
        return SpeechEntry(uid, ref, spec.language, spec.source, (Segment(0.0, max(duration, 1e-9), text.strip()),))
