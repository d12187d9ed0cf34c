"""Corpus preparation: audio -> 24 kHz mono -> Mimi codes, text -> ids, written as ArrayRecord shards.

`prepare_corpus` reads a manifest (or a TFDS dataset), loads and checks audio in worker processes,
encodes it with Mimi in length-sorted batches in the main process, and writes one shard per
`shard_size` entries (see `flmjax.data.records`). A shard whose marker carries the same fingerprint is
skipped, so an interrupted run resumes where it stopped. A bad entry (missing, unreadable or empty
audio, a segment past the audio's end, a transcript longer than its speech can carry, ...) is reported
by name and skipped; the rest of the corpus is still prepared.

Dialogs are prepared for one layout: each variant is that layout's plan (random for free user inputs)
plus, with augmentation, the listen track rendered with the plan's timing, augmented (noise, gain,
leakage) and Mimi-encoded. Epoch e of training reads variant e mod `variants`.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import math
import multiprocessing
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from flmjax.data import augment as aug
from flmjax.data import layouts, records
from flmjax.data.config import DataConfig
from flmjax.data.corpus import (
    AudioRef,
    CorpusError,
    DialogEntry,
    SpeechEntry,
    TfdsSpec,
    TfdsSpeech,
    read_manifest,
)
from flmjax.data.text_tokenizer import load_text_tokenizer
from flmjax.tokens import RELEASE_TOKENS, SAMPLE_RATE, SAMPLES_PER_FRAME

RANDOM_MIMI = "random-mimi(seed=0)"  # the name of the demo's random codec in index.json
ENCODE_BATCH = 8  # clips Mimi encodes at once (at most)
ENCODE_CHUNK_FRAMES = 25  # frames per streaming step (2 s): the one shape Mimi compiles for


@dataclasses.dataclass(frozen=True)
class PrepareOptions:
    """Everything that shapes a prepared record (part of every shard's fingerprint)."""

    mimi_name: str = RANDOM_MIMI
    layout: str | None = None  # dialogs: the layout the variants are planned for
    variants: int = 1
    augment: aug.AugmentConfig | None = None
    layout_config: layouts.LayoutConfig = layouts.LayoutConfig()
    noise_dir: str | None = None  # None: synthetic noise
    seed: int = 0
    shard_size: int = 64  # entries per shard

    def fingerprint(self, kind: str) -> dict[str, Any]:
        """The settings records of `kind` ("speech" or "dialogs") depend on."""
        lc = self.layout_config
        common = {
            "kind": kind,
            "mimi": self.mimi_name,
            "tokenizer": "qwen2.5+flm-specials",
            "lead_frames": lc.lead_frames,  # the transcript-length check and dialog plans
            "shard_size": self.shard_size,
        }
        if kind == "speech":
            return common
        return common | {
            "layout": self.layout,
            "variants": self.variants,
            "augment": dataclasses.asdict(self.augment) if self.augment else None,
            "plan": [lc.interruption_prob, lc.reaction_s],
            "noise_dir": self.noise_dir,
            "seed": self.seed,
        }

    @classmethod
    def for_data_config(cls, config: DataConfig) -> "PrepareOptions":
        return cls(
            mimi_name=mimi_name(config.mimi),
            layout=config.layout if config.is_dialog else None,
            variants=config.variants if config.is_dialog else 1,
            augment=config.augment,
            layout_config=config.layout_config,
            noise_dir=config.noise_dir,
            seed=config.seed,
        )


@dataclasses.dataclass
class PrepareReport:
    out_dir: Path
    kind: str
    records: int
    shards_written: int
    shards_skipped: int
    errors: list[str]
    audio_seconds: float  # of the audio encoded in this run
    seconds: float

    @property
    def failed(self) -> bool:
        return self.records == 0


# --- audio ---------------------------------------------------------------------------------------------


def mimi_name(path: str | os.PathLike | None) -> str:
    return RANDOM_MIMI if path is None else str(Path(path).resolve())


class LazyMimi:
    """A Mimi loaded when first needed (runs that find every shard done never load it): kyutai weights
    from a path, or for `RANDOM_MIMI` random weights, whose codes mean nothing to a real model."""

    def __init__(self, name: str = RANDOM_MIMI, log: Callable[[str], None] = print):
        self.name, self._log, self._mimi = name, log, None

    def streaming(self, batch_size: int) -> Any:
        if self._mimi is None:
            from flmjax.mimi import Mimi  # jax: only where audio gets encoded

            if self.name == RANDOM_MIMI:
                self._log("Mimi: RANDOM weights (demo only; pass --mimi PATH for kyutai's codec)")
                self._mimi = Mimi.random(seed=0)
            else:
                self._mimi = Mimi.from_pretrained(self.name)
        return self._mimi.streaming(batch_size)


def read_audio(ref: AudioRef, where: str) -> np.ndarray:
    """Mono float32 [N] at 24 kHz of an audio reference (a span is cut after resampling)."""
    from flmjax import audio

    if ref.samples is not None:
        pcm, sr = ref.samples, ref.sample_rate
    else:
        try:
            pcm, sr = audio.load_audio(ref.path)
        except FileNotFoundError:
            raise CorpusError(f"{where}: audio file not found: {ref.path}") from None
        except (audio.AudioError, OSError) as e:  # corrupt, empty, unreadable: the message names the file
            raise CorpusError(f"{where}: {e}") from None
    if pcm.shape[-1] == 0:
        raise CorpusError(f"{where}: empty audio {ref.describe()}")
    pcm = audio.prepare_for_mimi(pcm, sr)[0]
    if not np.all(np.isfinite(pcm)):
        raise CorpusError(f"{where}: audio {ref.describe()} holds NaN or infinite samples")
    if ref.start is not None:
        pcm = _cut(pcm, ref.start, ref.end, f"{where} audio span")
    return pcm


def _cut(pcm: np.ndarray, start: float, end: float, where: str) -> np.ndarray:
    duration = len(pcm) / SAMPLE_RATE
    if end > duration + 1e-3:
        raise CorpusError(f"{where}: ends at {end:.3f} s, past the audio's {duration:.3f} s")
    clip = pcm[int(round(start * SAMPLE_RATE)) : int(round(end * SAMPLE_RATE))]
    if clip.size == 0:
        raise CorpusError(f"{where}: empty span ({start}..{end} s)")
    return clip


def num_frames(num_samples: int) -> int:
    return -(-num_samples // SAMPLES_PER_FRAME)


def encode_batched(mimi: Any, clips: Sequence[np.ndarray], batch_size: int = ENCODE_BATCH) -> list[np.ndarray]:
    """Mimi codes int32 [8, ceil(N / 1920)] of each clip.

    Clips are sorted by length and streamed up to `batch_size` at a time through Mimi's streaming encoder
    in chunks of ENCODE_CHUNK_FRAMES: whatever the lengths, Mimi compiles one shape per batch size (a power
    of two: a CPU pays for padding rows) and memory stays bounded for long dialog tracks. Shorter clips
    are zero-padded; Mimi is causal, so padding after a clip does not change its frames.
    """
    order = sorted(range(len(clips)), key=lambda i: len(clips[i]))
    chunk = ENCODE_CHUNK_FRAMES * SAMPLES_PER_FRAME
    out: list[np.ndarray | None] = [None] * len(clips)
    for b in range(0, len(order), batch_size):
        rows = order[b : b + batch_size]
        length = -(-max(len(clips[i]) for i in rows) // chunk) * chunk
        pcm = np.zeros((1 << (len(rows) - 1).bit_length(), 1, length), dtype=np.float32)
        for r, i in enumerate(rows):
            pcm[r, 0, : len(clips[i])] = clips[i]
        stream = mimi.streaming(pcm.shape[0])
        codes = np.concatenate([np.asarray(stream.encode(pcm[..., t : t + chunk])) for t in range(0, length, chunk)], -1)
        for r, i in enumerate(rows):
            out[i] = codes[r, :, : num_frames(len(clips[i]))].astype(np.int32)
    return out  # type: ignore[return-value]


def silence_codes(mimi: Any) -> np.ndarray:
    """Codes [8, 1] of digital silence: the frame Mimi settles on (its first frames still see the start)."""
    codes = encode_batched(mimi, [np.zeros(ENCODE_CHUNK_FRAMES * SAMPLES_PER_FRAME, np.float32)])[0]
    return codes[:, -1:]


# --- loading entries (worker processes) ----------------------------------------------------------------


@dataclasses.dataclass
class _Clip:
    pcm: np.ndarray
    tokens: list[int]
    words: list[layouts.WordTiming] | None
    meta: dict[str, Any]


@dataclasses.dataclass
class _LoadedSpeech:
    clips: list[_Clip]
    errors: list[str]


@dataclasses.dataclass
class _LoadedDialog:
    meta: dict[str, Any]
    waves: list[np.ndarray]
    roles: list[str]
    tokens: list[list[int]]
    start_frames: list[int]


@dataclasses.dataclass(frozen=True)
class _TfdsRef:
    spec: TfdsSpec
    index: int


_TFDS_CACHE: dict[TfdsSpec, TfdsSpeech] = {}


def _word_timings(entry: SpeechEntry, seg_index: int, tok: Any) -> list[layouts.WordTiming] | None:
    """Word timings relative to the clip; a word after whitespace is tokenised with its leading space,
    so that the words' tokens concatenate to the sentence's tokens."""
    seg = entry.segments[seg_index]
    if not seg.words:
        return None
    out, cursor = [], 0
    for w in seg.words:
        at = seg.text.find(w.text, cursor)
        spaced = (at > 0 and seg.text[at - 1].isspace()) if at >= 0 else bool(out)
        cursor = at + len(w.text) if at >= 0 else cursor
        out.append(layouts.WordTiming(tok.encode((" " if spaced else "") + w.text), w.start - seg.start, w.end - seg.start))
    return out


def _load_speech(entry: SpeechEntry, where: str, lead: int) -> _LoadedSpeech:
    tok = load_text_tokenizer()
    pcm = read_audio(entry.audio, where)
    clips, errors = [], []
    for k, seg in enumerate(entry.segments):
        swhere = f"{where} segment {k}"
        try:
            clip = _cut(pcm, seg.start, seg.end, swhere)
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
        clips.append(_Clip(clip, tokens, _word_timings(entry, k, tok), meta))
    return _LoadedSpeech(clips, errors)


def _load_dialog(entry: DialogEntry, where: str) -> _LoadedDialog:
    tok = load_text_tokenizer()
    waves, starts = [], []
    cache: dict[str, np.ndarray] = {}  # turns that are spans of one recording read it once
    for k, turn in enumerate(entry.turns):
        twhere = f"{where} turn {k}"
        ref = turn.audio
        if ref.start is not None:
            if ref.path not in cache:
                cache[ref.path] = read_audio(dataclasses.replace(ref, start=None, end=None), twhere)
            wave = _cut(cache[ref.path], ref.start, ref.end, f"{twhere} audio span")
        else:
            wave = read_audio(ref, twhere)
        if turn.end is not None:  # a turn that ends before its audio does is cut (an interrupted model)
            wave = wave[: max(1, int(round((turn.end - turn.start) * SAMPLE_RATE)))]
        waves.append(wave)
        starts.append(layouts.frames(turn.start))
    meta = {"id": entry.id, "language": entry.language, "texts": [t.text for t in entry.turns]}
    return _LoadedDialog(meta, waves, [t.role for t in entry.turns], [tok.encode(t.text) for t in entry.turns], starts)


def _load(task: tuple[Any, str, int]) -> _LoadedSpeech | _LoadedDialog | CorpusError:
    """Worker: one entry (or a TFDS example) -> its audio at 24 kHz and its tokens, or the error."""
    entry, where, lead = task
    try:
        if isinstance(entry, CorpusError):
            return entry
        if isinstance(entry, _TfdsRef):
            if entry.spec not in _TFDS_CACHE:
                _TFDS_CACHE[entry.spec] = TfdsSpeech(entry.spec)
            entry = _TFDS_CACHE[entry.spec][entry.index]
            where = f"{where} ({entry.id})"
        if isinstance(entry, SpeechEntry):
            return _load_speech(entry, where, lead)
        return _load_dialog(entry, where)
    except CorpusError as e:
        return e


# --- encoding and writing (main process) ---------------------------------------------------------------


class _NoiseBank:
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


def _speech_records(loaded: list[_LoadedSpeech], mimi: Any, errors: list[str]) -> tuple[list[bytes], float]:
    clips = [c for entry in loaded for c in entry.clips]
    for entry in loaded:
        errors.extend(entry.errors)
    codes = encode_batched(mimi, [c.pcm for c in clips])
    out = [records.pair_record(c.meta, k, c.tokens, c.words) for c, k in zip(clips, codes)]
    return out, sum(len(c.pcm) for c in clips) / SAMPLE_RATE


def _dialog_records(
    loaded: list[tuple[int, _LoadedDialog]], mimi: Any, opts: PrepareOptions, noise: _NoiseBank | None, errors: list[str]
) -> tuple[list[bytes], float]:
    turn_codes = encode_batched(mimi, [w for _, d in loaded for w in d.waves])
    planned, tracks = [], []
    for index, d in loaded:
        codes, turn_codes = turn_codes[: len(d.waves)], turn_codes[len(d.waves) :]
        turns = [layouts.Turn(role=r, codes=c, text_tokens=t, start_frame=s, end_frame=s + c.shape[1])
                 for r, c, t, s in zip(d.roles, codes, d.tokens, d.start_frames)]  # fmt: skip
        try:
            plans, listen = [], []
            for v in range(opts.variants):
                rng = np.random.default_rng([opts.seed, index, v])
                plan = layouts.plan_dialog(turns, opts.layout, rng, RELEASE_TOKENS, opts.layout_config)
                plans.append(plan)
                if opts.augment is not None:
                    utterances, speak, n = aug.plan_waveforms(plan, d.waves)
                    listen.append(aug.augment_listen(utterances, n, rng, opts.augment, noise.clips, speak))
        except layouts.LayoutError as e:
            errors.append(f"dialog {d.meta['id']}: {e}")
            continue
        planned.append((d, turns, plans))
        tracks.append(listen)
    encoded = encode_batched(mimi, [t for listen in tracks for t in listen])
    out, seconds = [], sum(len(w) for _, d in loaded for w in d.waves)
    for (d, turns, plans), listen in zip(planned, tracks):
        codes, encoded = encoded[: len(listen)], encoded[len(listen) :]
        seconds += sum(len(t) for t in listen)
        out.append(records.dialog_record(d.meta, turns, plans, codes or [None] * len(plans)))
    return out, seconds / SAMPLE_RATE


def _open_source(corpus: str, tfds_options: dict[str, Any] | None) -> tuple[str, list[Any], list[str]]:
    """(kind, entries (or their errors, or TFDS references), labels naming them) of a corpus argument."""
    if corpus.startswith("tfds:"):
        spec = TfdsSpec.parse(corpus, **(tfds_options or {}))
        n = len(TfdsSpeech(spec))
        return "speech", [_TfdsRef(spec, i) for i in range(n)], [f"{corpus}[{i}]" for i in range(n)]
    kind, items = read_manifest(corpus)
    name = Path(corpus).name
    return kind, items, [f"{name} ({e.id})" if not isinstance(e, CorpusError) else "" for e in items]


def _shard_fingerprint(settings: dict[str, Any], entries: Sequence[Any]) -> str:
    blob = json.dumps(settings, sort_keys=True) + "".join(repr(e) for e in entries)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def prepare_corpus(
    corpus: str | os.PathLike,
    out_dir: str | os.PathLike,
    opts: PrepareOptions = PrepareOptions(),
    mimi: Any = None,
    workers: int = 2,
    progress: bool = True,
    tfds_options: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
) -> PrepareReport:
    """Prepare a corpus (manifest path or `tfds:NAME[:SPLIT]`) into `out_dir`.

    `mimi`: a `Mimi` (or anything with its `streaming`), matching `opts.mimi_name` (default: loaded when needed).
    """
    from tqdm import tqdm

    t0 = time.time()
    out = Path(out_dir)
    kind, entries, wheres = _open_source(str(corpus), tfds_options)
    if kind == "dialogs" and opts.layout not in layouts.DIALOG_LAYOUTS:
        raise CorpusError(f"{corpus}: dialogs are prepared for a layout, one of {layouts.DIALOG_LAYOUTS}; got {opts.layout!r}")
    mimi = mimi if mimi is not None else LazyMimi(opts.mimi_name, log)
    settings = opts.fingerprint(kind)
    num_shards = max(1, math.ceil(len(entries) / opts.shard_size))
    spans = [range(s * opts.shard_size, min(len(entries), (s + 1) * opts.shard_size)) for s in range(num_shards)]
    prints = [_shard_fingerprint(settings, [entries[i] for i in span]) for span in spans]
    todo = [s for s in range(num_shards) if (records.read_marker(out, s) or {}).get("fingerprint") != prints[s]]
    previous = _read_index(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / records.INDEX).unlink(missing_ok=True)  # the folder is unfinished until the index is back
    lead = opts.layout_config.lead_frames
    noise = _NoiseBank(opts.noise_dir, opts.seed) if kind == "dialogs" and opts.augment and todo else None
    if noise is not None and opts.noise_dir is None:
        log("augmentation noise: synthetic white/pink/brown noise (give a noise folder for real noise)")
    seconds = 0.0
    pool = _pool(workers) if todo else None
    bar = tqdm(total=sum(len(spans[s]) for s in todo), unit="entry", disable=not progress, desc=f"prepare {out.name}")
    try:
        for s in todo:
            errors: list[str] = []
            loaded = []
            tasks = [(entries[i], wheres[i], lead) for i in spans[s]]
            for i, result in zip(spans[s], pool.map(_load, tasks) if pool else map(_load, tasks)):
                bar.update(1)
                if isinstance(result, CorpusError):
                    errors.append(str(result))
                else:
                    loaded.append((i, result))
            if kind == "speech":
                recs, audio_s = _speech_records([r for _, r in loaded], mimi, errors)
            else:
                recs, audio_s = _dialog_records(loaded, mimi, opts, noise, errors)
            seconds += audio_s
            records.write_shard(out, s, recs, {"fingerprint": prints[s], "errors": errors})
    finally:
        bar.close()
        if pool:
            pool.shutdown()
    for stale in out.glob("shard-*"):  # shards of an earlier, longer version of the corpus
        if int(stale.name[6:11]) >= num_shards:
            stale.unlink()
    markers = [records.read_marker(out, s) for s in range(num_shards)]
    all_errors = [e for m in markers for e in m["errors"]]
    total = sum(m["records"] for m in markers)
    same = previous is not None and previous.get("settings") == settings
    index = {
        "kind": kind,
        "corpus": str(corpus),
        "records": total,
        "shards": [{"shard": s, "records": m["records"]} for s, m in enumerate(markers)],
        "settings": settings,
        "layout": opts.layout if kind == "dialogs" else None,
        "variants": opts.variants if kind == "dialogs" else 1,
        "errors": len(all_errors),
    }
    if total:  # what layouts put on an audio channel nobody speaks on (dialogs)
        index["silence_codes"] = previous["silence_codes"] if same else silence_codes(mimi).tolist()
    records.write_index(out, index)
    return PrepareReport(out, kind, total, len(todo), num_shards - len(todo), all_errors, seconds, time.time() - t0)


def _read_index(root: Path) -> dict[str, Any] | None:
    try:
        return json.loads((root / records.INDEX).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _pool(workers: int) -> concurrent.futures.Executor | None:
    """Worker processes for reading audio ('spawn': the parent may run JAX, which forking can deadlock)."""
    if workers <= 1:
        return None
    return concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))


# --- first use -------------------------------------------------------------------------------------------


def corpus_roots(config: DataConfig) -> list[Path]:
    """The prepared folder of each of a config's corpora: its `prepared`, else a cache folder named by
    the preparation settings (so a changed setting prepares afresh instead of reusing stale records)."""
    roots = []
    fingerprint = PrepareOptions.for_data_config(config).fingerprint("dialogs" if config.is_dialog else "speech")
    for spec in config.corpora:
        if spec.prepared is not None:
            roots.append(Path(spec.prepared))
            continue
        source = spec.manifest if spec.manifest.startswith("tfds:") else str(Path(spec.manifest).resolve())
        key = hashlib.sha256(json.dumps([fingerprint, source], sort_keys=True).encode()).hexdigest()[:10]
        roots.append(Path(config.cache_dir) / f"{spec.name}-{key}")
    return roots


def ensure_prepared(
    config: DataConfig, progress: bool = True, log: Callable[[str], None] = print, workers: int = 2
) -> list[Path]:
    """Prepare every corpus of `config` given as a manifest whose cache folder is not finished yet."""
    roots = corpus_roots(config)
    opts = PrepareOptions.for_data_config(config)
    mimi = LazyMimi(opts.mimi_name, log)  # shared: loaded at most once
    for spec, root in zip(config.corpora, roots):
        if spec.prepared is not None or (root / records.INDEX).exists():
            continue
        log(f"preparing {spec.name} from {spec.manifest} into {root} (first use)")
        report = prepare_corpus(spec.manifest, root, opts, mimi=mimi, workers=workers, progress=progress, log=log)
        for e in report.errors:
            log(f"  skipped: {e}")
        if report.failed:
            raise CorpusError(f"{spec.manifest}: no entry could be prepared")
    return roots


def summarize(report: PrepareReport) -> Iterable[str]:
    yield (
        f"{report.out_dir}: {report.records} {report.kind} records, {report.shards_written} shards written, "
        f"{report.shards_skipped} already done, {report.audio_seconds / 60:.1f} min of audio encoded in "
        f"{report.seconds:.1f} s"
    )
    if report.errors:
        yield f"{len(report.errors)} entries or segments skipped:"
        yield from (f"  {e}" for e in report.errors)
