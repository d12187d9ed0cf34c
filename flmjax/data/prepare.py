"""Corpus preparation: audio -> 24 kHz mono -> Mimi codes, text -> ids, written as ArrayRecord shards.

`prepare_corpus` opens a corpus (`flmjax.data.sources`), loads and checks audio in worker processes
(`flmjax.data.loading`), encodes it with Mimi in length-sorted batches in the main process
(`flmjax.data.encoding`), and writes one shard per
`shard_size` entries (see `flmjax.data.records`). A shard whose marker carries the same fingerprint is
skipped, so an interrupted run resumes where it stopped. A bad entry (missing, unreadable or empty
audio, a segment past the audio's end, a transcript longer than its speech can carry, ...) is reported
by name and skipped; the rest of the corpus is still prepared.

Dialogs are prepared for one layout: each variant is that layout's plan (random for free user inputs)
plus, with augmentation, the listen track rendered with the plan's timing, augmented (noise, gain,
leakage) and Mimi-encoded. Epoch e of training reads variant e mod `variants`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from flmjax import storage
from flmjax.data import augment as aug
from flmjax.data import layouts, moshi, records
from flmjax.data.config import DataConfig
from flmjax.data.corpus import CorpusError
from flmjax.data.encoding import (
    ENCODE_BATCH,
    RANDOM_MIMI,
    CodesCache,
    Encoder,
    LazyMimi,
    encode_batched,
    mimi_name,
    silence_codes,
)
from flmjax.data.loading import LoadedDialog, LoadedSpeech, NoiseBank, load_entry, reader_pool
from flmjax.data.sources import open_source
from flmjax.data.text_tokenizer import named_tokenizer
from flmjax.tokens import SAMPLE_RATE


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
    tokenizer: str = "qwen"  # text tokenizer (flmjax.data.text_tokenizer.TOKENIZERS)

    def fingerprint(self, kind: str, recorded: bool = False) -> dict[str, Any]:
        """The settings records of `kind` ("speech" or "dialogs") depend on; `recorded`: dialogs laid out
        from recordings' own timing (`moshi:` corpora), cut into windows of the sample's length."""
        lc = self.layout_config
        common = {
            "kind": kind,
            "mimi": self.mimi_name,
            "tokenizer": "qwen2.5+flm-specials" if self.tokenizer == "qwen" else self.tokenizer,
            "lead_frames": lc.lead_frames,  # the transcript-length check and dialog plans
            "shard_size": self.shard_size,
        }
        if kind == "speech":
            return common
        if recorded:
            lc = self.layout_config
            return common | {"layout": str(layouts.Layout.RECORDED), "variants": 1, "augment": None,
                             "recorded": [lc.sample_frames, lc.alignment, lc.sentence_gap_s]}  # fmt: skip
        return common | {
            "layout": self.layout,
            "variants": self.variants,
            "augment": dataclasses.asdict(self.augment) if self.augment else None,
            "plan": [lc.interruption_prob, lc.reaction_s],
            "noise_dir": self.noise_dir,
            "seed": self.seed,
        }

    @classmethod
    def for_data_config(cls, config: DataConfig) -> PrepareOptions:
        return cls(
            mimi_name=mimi_name(config.mimi),
            layout=config.layout if config.is_dialog else None,
            variants=config.variants if config.is_dialog else 1,
            augment=config.augment,
            layout_config=config.layout_config,
            noise_dir=config.noise_dir,
            seed=config.seed,
            tokenizer=config.tokenizer,
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
    complete: bool = True  # False: shards of other hosts are missing, so no index yet (records, errors: this host's)

    @property
    def failed(self) -> bool:
        """Nothing could be prepared (of this host's shards, when it has some)."""
        return self.records == 0 and (self.complete or self.shards_written + self.shards_skipped > 0)


# --- encoding and writing (main process) ---------------------------------------------------------------


def _speech_records(
    loaded: list[LoadedSpeech], encode: Encoder, mimi: Any, errors: list[str]
) -> tuple[list[bytes], float]:
    clips = [c for entry in loaded for c in entry.clips]
    for entry in loaded:
        errors.extend(entry.errors)
    codes = encode(mimi, [c.pcm for c in clips])
    out = [records.pair_record(c.meta, k, c.tokens, c.words) for c, k in zip(clips, codes)]
    return out, sum(len(c.pcm) for c in clips) / SAMPLE_RATE


def _dialog_records(
    loaded: list[tuple[int, LoadedDialog]],
    encode: Encoder,
    mimi: Any,
    opts: PrepareOptions,
    noise: NoiseBank | None,
    errors: list[str],
) -> tuple[list[bytes], float]:
    assert opts.layout is not None  # prepare_corpus checked it is one of DIALOG_LAYOUTS
    turn_codes = encode(mimi, [w for _, d in loaded for w in d.waves])
    planned, tracks = [], []
    for index, d in loaded:
        codes, turn_codes = turn_codes[: len(d.waves)], turn_codes[len(d.waves) :]
        turns = [layouts.Turn(role=r, codes=c, text_tokens=t, start_frame=s, end_frame=s + c.shape[1])
                 for r, c, t, s in zip(d.roles, codes, d.tokens, d.start_frames)]  # fmt: skip
        try:
            plans, listen = [], []
            for v in range(opts.variants):
                rng = np.random.default_rng([opts.seed, index, v])
                plan = layouts.plan_dialog(
                    turns, opts.layout, rng, named_tokenizer(opts.tokenizer)[1], opts.layout_config
                )
                plans.append(plan)
                if opts.augment is not None:
                    assert noise is not None  # prepare_corpus makes one whenever dialogs are augmented
                    utterances, speak, n = aug.plan_waveforms(plan, d.waves)
                    listen.append(aug.augment_listen(utterances, n, rng, opts.augment, noise.clips, speak))
        except layouts.LayoutError as e:
            errors.append(f"dialog {d.meta['id']}: {e}")
            continue
        planned.append((d, turns, plans))
        tracks.append(listen)
    encoded = encode(mimi, [t for listen in tracks for t in listen])
    out, seconds = [], sum(len(w) for _, d in loaded for w in d.waves)
    for (d, turns, plans), listen in zip(planned, tracks):
        codes, encoded = encoded[: len(listen)], encoded[len(listen) :]
        seconds += sum(len(t) for t in listen)
        listen_codes: list[np.ndarray | None] = list(codes) if codes else [None] * len(plans)
        out.append(records.dialog_record(d.meta, turns, plans, listen_codes))
    return out, seconds / SAMPLE_RATE


def _recording_records(
    loaded: list[moshi.LoadedRecording], encode: Encoder, mimi: Any, opts: PrepareOptions
) -> tuple[list[bytes], float]:
    """Both channels of every recording encoded, then one dialog record per window (flmjax.data.moshi)."""
    codes = encode(mimi, [w for r in loaded for w in (r.left, r.right)])
    out = moshi.recording_records(
        loaded, codes[0::2], codes[1::2], opts.layout_config, named_tokenizer(opts.tokenizer)[0]
    )
    return out, sum(len(r.left) + len(r.right) for r in loaded) / SAMPLE_RATE


def _shard_fingerprint(settings: dict[str, Any], entries: Sequence[Any]) -> str:
    blob = json.dumps(settings, sort_keys=True) + "".join(repr(e) for e in entries)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@dataclasses.dataclass(frozen=True)
class Hosts:
    """This process's share of the shard plan: shard s belongs to host s mod `count` (round robin, so every
    host gets entries from all over the corpus). `distributed`: the hosts are the processes of an
    initialised `jax.distributed`, which can wait for each other."""

    index: int = 0
    count: int = 1
    distributed: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise CorpusError(f"host index {self.index} is not in [0, {self.count}) (--host-index, --num-hosts)")

    @classmethod
    def detect(cls, index: int | None = None, count: int | None = None) -> Hosts:
        """Explicit --host-index/--num-hosts (any scheduler), else the processes of `jax.distributed` when it
        is initialised, else a single host."""
        if index is not None or count is not None:
            return cls(index or 0, count or 1)
        import jax

        if jax.distributed.is_initialized() and jax.process_count() > 1:
            return cls(jax.process_index(), jax.process_count(), distributed=True)
        return cls()

    def owns(self, shard: int) -> bool:
        return shard % self.count == self.index

    def barrier(self, name: str) -> None:
        if self.distributed:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(name)


def prepare_corpus(
    corpus: str | os.PathLike,
    out_dir: str | os.PathLike,
    opts: PrepareOptions = PrepareOptions(),
    mimi: Any = None,
    workers: int = 2,
    progress: bool = True,
    tfds_options: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
    hosts: Hosts = Hosts(),
    hf_options: dict[str, Any] | None = None,
    encode_batch: int = ENCODE_BATCH,
    codes_cache: CodesCache | None = None,
) -> PrepareReport:
    """Prepare a corpus (manifest path, `tfds:NAME[:SPLIT]` or `hf:PATH[:SPLIT]`) into `out_dir`: this host's
    share of the shards (`hosts`), then, when every shard's marker is there, the index.

    `mimi`: a `Mimi` or `LazyMimi` matching `opts.mimi_name` (default: loaded when needed).
    `encode_batch`: clips per local device Mimi encodes at once.
    `codes_cache`: clips encoded before (by `opts.mimi_name`) are read from it, new ones added.
    """
    from tqdm import tqdm

    t0 = time.time()
    out = storage.path(out_dir)
    kind, entries, wheres = open_source(str(corpus), tfds_options, hf_options)
    recorded = str(corpus).startswith(moshi.PREFIX)  # laid out from the recordings' timing, for any stage
    if kind == "dialogs" and not recorded and opts.layout not in layouts.DIALOG_LAYOUTS:
        raise CorpusError(
            f"{corpus}: dialogs are prepared for a layout, one of {layouts.DIALOG_LAYOUTS}; got {opts.layout!r}"
        )
    mimi = mimi if mimi is not None else LazyMimi(opts.mimi_name, log)
    encode: Encoder = functools.partial(encode_batched, batch_size=encode_batch)
    if codes_cache is not None:
        encode = codes_cache.wrap(encode)
    settings = opts.fingerprint(kind, recorded)
    num_shards = max(1, math.ceil(len(entries) / opts.shard_size))
    spans = [range(s * opts.shard_size, min(len(entries), (s + 1) * opts.shard_size)) for s in range(num_shards)]
    prints = [_shard_fingerprint(settings, [entries[i] for i in span]) for span in spans]
    mine = [s for s in range(num_shards) if hosts.owns(s)]
    todo = [s for s in mine if not _done(out, s, prints[s])]
    previous = _read_index(out)
    if not storage.is_remote(out):  # an object store has no folders to make
        out.mkdir(parents=True, exist_ok=True)
    if todo:
        (out / records.INDEX).unlink(missing_ok=True)  # the folder is unfinished until the index is back
    lead = opts.layout_config.lead_frames
    noise = (
        NoiseBank(opts.noise_dir, opts.seed) if kind == "dialogs" and opts.augment and todo and not recorded else None
    )
    if noise is not None and opts.noise_dir is None:
        log("augmentation noise: synthetic white/pink/brown noise (give a noise folder for real noise)")
    seconds = 0.0
    pool = reader_pool(workers) if todo else None
    bar = tqdm(total=sum(len(spans[s]) for s in todo), unit="entry", disable=not progress, desc=f"prepare {out.name}")
    try:
        for s in todo:
            errors: list[str] = []
            loaded: list[tuple[int, Any]] = []  # LoadedSpeech, LoadedDialog or LoadedRecording, as `kind` says
            tasks = [(entries[i], wheres[i], lead, opts.tokenizer) for i in spans[s]]
            for i, result in zip(spans[s], pool.map(load_entry, tasks) if pool else map(load_entry, tasks)):
                bar.update(1)
                if isinstance(result, CorpusError):
                    errors.append(str(result))
                else:
                    loaded.append((i, result))
            if recorded:
                recs, audio_s = _recording_records([r for _, r in loaded], encode, mimi, opts)
            elif kind == "speech":
                recs, audio_s = _speech_records([r for _, r in loaded], encode, mimi, errors)
            else:
                recs, audio_s = _dialog_records(loaded, encode, mimi, opts, noise, errors)
            seconds += audio_s
            records.write_shard(out, s, recs, {"fingerprint": prints[s], "errors": errors})
    finally:
        bar.close()
        if pool:
            pool.shutdown()
    hosts.barrier(f"prepared shards of {out}")
    written, done = len(todo), len(mine) - len(todo)
    waiting = [s for s in range(num_shards) if not _done(out, s, prints[s])]
    if waiting or (hosts.distributed and hosts.index != 0):  # the index: once, when every shard is there
        markers = [m for s in mine if (m := records.read_marker(out, s)) is not None]
        mine_errors = [e for m in markers for e in m["errors"]]
        if waiting:
            log(f"{out}: {len(waiting)} shards of other hosts not done yet; the host finishing last writes the index")
        hosts.barrier(f"indexed {out}")
        report = PrepareReport(out, kind, sum(m["records"] for m in markers), written, done, mine_errors, seconds, 0.0)
        return dataclasses.replace(report, seconds=time.time() - t0, complete=not waiting)
    for stale in out.glob("shard-*"):  # shards of an earlier, longer version of the corpus
        if int(stale.name[6:11]) >= num_shards:
            stale.unlink(missing_ok=True)
    markers = [m for s in range(num_shards) if (m := records.read_marker(out, s)) is not None]  # all: none waiting
    all_errors = [e for m in markers for e in m["errors"]]
    total = sum(m["records"] for m in markers)
    same = previous is not None and previous.get("settings") == settings and "silence_codes" in previous
    index = {
        "kind": kind,
        "corpus": str(corpus),
        "records": total,
        "shards": [{"shard": s, "records": m["records"]} for s, m in enumerate(markers)],
        "settings": settings,
        "layout": settings.get("layout"),
        "variants": settings.get("variants", 1),
        "errors": len(all_errors),
    }
    if total:  # what layouts put on an audio channel nobody speaks on (dialogs)
        index["silence_codes"] = previous["silence_codes"] if same and previous else silence_codes(mimi).tolist()
    records.write_index(out, index)
    hosts.barrier(f"indexed {out}")
    return PrepareReport(out, kind, total, written, done, all_errors, seconds, time.time() - t0)


def _done(root: Path, shard: int, fingerprint: str) -> bool:
    """Whether a shard's marker says it holds the records of these entries and settings."""
    return (records.read_marker(root, shard) or {}).get("fingerprint") == fingerprint


def _read_index(root: Path) -> dict[str, Any] | None:
    try:
        return json.loads(storage.read_bytes(root / records.INDEX).decode("utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


# --- first use -------------------------------------------------------------------------------------------


def corpus_roots(config: DataConfig) -> list[Path]:
    """The prepared folder of each of a config's corpora: its `prepared`, else a cache folder named by
    the preparation settings (so a changed setting prepares afresh instead of reusing stale records)."""
    roots = []
    opts = PrepareOptions.for_data_config(config)
    for spec in config.corpora:
        if spec.prepared is not None:
            roots.append(storage.path(spec.prepared))
            continue
        assert spec.manifest is not None  # CorpusSpec gives a manifest or a prepared folder
        recorded = spec.manifest.startswith(moshi.PREFIX)
        fingerprint = opts.fingerprint("dialogs" if config.is_dialog or recorded else "speech", recorded)
        local = not spec.manifest.startswith("tfds:") and not storage.is_remote(spec.manifest)
        source = str(Path(spec.manifest).resolve()) if local else spec.manifest
        key = hashlib.sha256(json.dumps([fingerprint, source], sort_keys=True).encode()).hexdigest()[:10]
        roots.append(storage.path(config.cache_dir) / f"{spec.name}-{key}")
    return roots


def ensure_prepared(
    config: DataConfig,
    progress: bool = True,
    log: Callable[[str], None] = print,
    workers: int = 2,
    hosts: Hosts = Hosts(),
) -> list[Path]:
    """Prepare every corpus of `config` given as a manifest whose cache folder is not finished yet (this
    host's share of it; with distributed hosts, every host returns once the folders are finished)."""
    roots = corpus_roots(config)
    opts = PrepareOptions.for_data_config(config)
    mimi = LazyMimi(opts.mimi_name, log)  # shared: loaded at most once
    # One cache of codes for the config's cache folder: every stage preparing the same recordings reuses them.
    codes = (
        None if storage.is_remote(config.cache_dir) else CodesCache(Path(config.cache_dir) / "codes", opts.mimi_name)
    )
    todo = [(spec, root) for spec, root in zip(config.corpora, roots) if spec.prepared is None]
    todo = [(spec, root) for spec, root in todo if not (root / records.INDEX).exists()]
    hosts.barrier(f"checked the prepared corpora of {config.name}")  # before any host removes an index
    for spec, root in todo:
        assert spec.manifest is not None  # CorpusSpec gives a manifest or a prepared folder
        log(f"preparing {spec.name} from {spec.manifest} into {root} (first use)")
        report = prepare_corpus(
            spec.manifest,
            root,
            opts,
            mimi=mimi,
            workers=workers,
            progress=progress,
            log=log,
            hosts=hosts,
            codes_cache=codes,
        )
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
    if not report.complete:
        yield "index not written yet: shards of other hosts are missing (records and errors above: this host's)"
    if report.errors:
        yield f"{len(report.errors)} entries or segments skipped:"
        yield from (f"  {e}" for e in report.errors)
