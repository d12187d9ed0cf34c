"""Prepared corpora on disk: ArrayRecord shards of self-describing records, plus `index.json`.

A prepared corpus is a folder:
  index.json                 what was prepared and how (kind, Mimi, tokenizer, layout of dialog variants,
                             silence codes, record counts, errors); written last
  shard-00000.array_record   records, random access (Grain's `ArrayRecordDataSource`)
  shard-00000.json           the shard's completion marker: fingerprint, record count, errors

A record is `MAGIC | u32 header length | JSON header | array bytes`: the header holds plain metadata and
each array's dtype and shape, so a record decodes without pickle and without knowing its schema.
Records of sentence-aligned speech are (audio clip, sentence) pairs; records of dialogs hold each turn's
codes and the pre-encoded listen-channel variants (see `flmjax.data.prepare`).
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from flmjax import storage
from flmjax.data import layouts
from flmjax.errors import FlmjaxError

MAGIC = b"FLMR"
INDEX = "index.json"
FORMAT_VERSION = 1


class PreparedCorpusError(FlmjaxError):
    """A prepared-corpus folder that is missing, unfinished or inconsistent."""


def encode_record(meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> bytes:
    arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    header = json.dumps(
        {"meta": meta, "arrays": [[k, v.dtype.str, list(v.shape)] for k, v in arrays.items()]},
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode("utf-8")
    return b"".join([MAGIC, struct.pack("<I", len(header)), header, *(v.tobytes() for v in arrays.values())])


def decode_record(data: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    if data[:4] != MAGIC:
        raise PreparedCorpusError("not an flmjax record (bad magic)")
    (size,) = struct.unpack_from("<I", data, 4)
    header = json.loads(data[8 : 8 + size].decode("utf-8"))
    arrays, offset = {}, 8 + size
    for name, dtype, shape in header["arrays"]:
        dt = np.dtype(dtype)
        count = int(np.prod(shape, dtype=np.int64))
        arrays[name] = np.frombuffer(data, dtype=dt, count=count, offset=offset).reshape(shape)
        offset += count * dt.itemsize
    return header["meta"], arrays


# --- the two record kinds ------------------------------------------------------------------------------


def pair_record(
    meta: Mapping[str, Any],
    codes: np.ndarray,
    text_tokens: Sequence[int] | np.ndarray,
    words: list[layouts.WordTiming] | None,
) -> bytes:
    """A (clip, sentence) pair: codes int16 [8, F], text ids, optional word timings (clip seconds)."""
    arrays: dict[str, np.ndarray] = {"codes": codes.astype(np.int16), "text": np.asarray(text_tokens, dtype=np.int32)}
    if words:
        arrays["word_tokens"] = np.asarray([t for w in words for t in w.tokens], dtype=np.int32)
        arrays["word_bounds"] = np.cumsum([0] + [len(w.tokens) for w in words]).astype(np.int32)
        arrays["word_times"] = np.asarray([[w.start_s, w.end_s] for w in words], dtype=np.float32)
    return encode_record(dict(meta, kind="pair"), arrays)


def pair_from_record(meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> layouts.AlignedPair:
    words = None
    if "word_tokens" in arrays:
        b, t = arrays["word_bounds"], arrays["word_times"]
        words = [
            layouts.WordTiming(arrays["word_tokens"][b[k] : b[k + 1]].tolist(), float(t[k, 0]), float(t[k, 1]))
            for k in range(len(t))
        ]
    return layouts.AlignedPair(arrays["codes"].astype(np.int32), arrays["text"].tolist(), words)


def dialog_record(
    meta: Mapping[str, Any],
    turns: list[layouts.Turn],
    plans: list[layouts.DialogPlan],
    listen: Sequence[np.ndarray | None],
) -> bytes:
    """A dialog: each turn's codes, and per variant its plan and its encoded listen track (or none)."""
    arrays = {f"turn{i}": np.asarray(t["codes"], dtype=np.int16) for i, t in enumerate(turns)}
    arrays |= {f"text{i}": np.asarray(t["text_tokens"], dtype=np.int32) for i, t in enumerate(turns)}
    arrays |= {f"listen{v}": codes.astype(np.int16) for v, codes in enumerate(listen) if codes is not None}
    meta = dict(
        meta,
        kind="dialog",
        turns=[
            {"role": t["role"], "start_frame": int(t["start_frame"]), "end_frame": int(t["end_frame"])} for t in turns
        ],
        plans=[p.to_json() for p in plans],
    )
    return encode_record(meta, arrays)


def dialog_from_record(
    meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray], variant: int
) -> tuple[list[layouts.Turn], layouts.DialogPlan, np.ndarray | None]:
    """Turns, the plan and the listen codes (None: place the clean user turns) of one variant."""
    turns = [
        layouts.Turn(role=t["role"], codes=arrays[f"turn{i}"].astype(np.int32), text_tokens=arrays[f"text{i}"].tolist(),
                     start_frame=t["start_frame"], end_frame=t["end_frame"])
        for i, t in enumerate(meta["turns"])
    ]  # fmt: skip
    v = variant % len(meta["plans"])
    plan = layouts.DialogPlan.from_json(meta["plans"][v])
    listen = arrays.get(f"listen{v}")
    return turns, plan, None if listen is None else listen.astype(np.int32)


# --- the folder ----------------------------------------------------------------------------------------


def shard_path(root: str | os.PathLike, shard: int) -> Path:
    return storage.path(root) / f"shard-{shard:05d}.array_record"


def marker_path(root: str | os.PathLike, shard: int) -> Path:
    return storage.path(root) / f"shard-{shard:05d}.json"


def write_shard(root: str | os.PathLike, shard: int, records: list[bytes], marker: Mapping[str, Any]) -> None:
    """Write a shard's records, then its marker: a shard with a marker is complete (resumable runs)."""
    from array_record.python.array_record_module import ArrayRecordWriter

    path = shard_path(root, shard)
    tmp = storage.staging_file(path)  # the writer needs a local file; remote shards are uploaded whole
    writer = ArrayRecordWriter(tmp, "group_size:1")  # one record per chunk: cheap random access
    for record in records:
        writer.write(record)
    writer.close()
    storage.upload(tmp, path)
    _write_json(marker_path(root, shard), dict(marker, records=len(records)))


def read_marker(root: str | os.PathLike, shard: int) -> dict[str, Any] | None:
    try:
        return json.loads(storage.read_bytes(marker_path(root, shard)).decode("utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def write_index(root: str | os.PathLike, index: Mapping[str, Any]) -> None:
    _write_json(storage.path(root) / INDEX, dict(index, format=FORMAT_VERSION))


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    storage.write_bytes_atomic(path, json.dumps(data, ensure_ascii=False, indent=1).encode("utf-8"))


class PreparedCorpus:
    """A finished prepared corpus: its index and random access to its records."""

    def __init__(self, root: str | os.PathLike):
        self.root = storage.path(root)
        try:
            self.index = json.loads(storage.read_bytes(self.root / INDEX).decode("utf-8"))
        except FileNotFoundError:
            raise PreparedCorpusError(
                f"{self.root}: not a prepared corpus (no {INDEX}; run launch/prepare_data.py)"
            ) from None
        if self.index.get("format") != FORMAT_VERSION:
            raise PreparedCorpusError(
                f"{self.root}: record format {self.index.get('format')}, expected {FORMAT_VERSION}"
            )
        self.shards = [shard_path(self.root, s["shard"]) for s in self.index["shards"] if s["records"]]
        missing = [str(p) for p in self.shards if not storage.exists(p)]
        if missing:
            raise PreparedCorpusError(f"{self.root}: missing shard files {missing}")
        self._source = None

    @property
    def kind(self) -> str:
        return self.index["kind"]

    @property
    def num_records(self) -> int:
        return int(self.index["records"])

    @property
    def silence_codes(self) -> np.ndarray:
        """Mimi codes [8, P] of digital silence, encoded by the same Mimi as the records."""
        return np.asarray(self.index["silence_codes"], dtype=np.int32)

    def source(self):
        """Grain random-access source of the raw record bytes."""
        import grain

        if self._source is None:
            if not self.shards:
                raise PreparedCorpusError(f"{self.root}: no records")
            # ArrayRecord reads local files: remote shards are staged into a local cache (flmjax.storage)
            self._source = grain.sources.ArrayRecordDataSource([storage.local_copy(p) for p in self.shards])
        return self._source

    def __len__(self) -> int:
        return self.num_records

    def __getitem__(self, index: int) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return decode_record(self.source()[index])
