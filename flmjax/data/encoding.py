"""Mimi encoding for preparation: length-sorted batches streamed through Mimi's encoder in fixed chunks.

`LazyMimi` loads the codec when first needed (a run that finds every shard done never loads it);
`encode_batched` turns clips of any lengths into codes with one compiled shape per batch size;
`CodesCache` keeps the codes of clips already encoded, so that the stages preparing the same recordings
(post1 and post2; ft1, ft2 and dpo on one dialog corpus) encode each clean clip once.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from flmjax.tokens import SAMPLES_PER_FRAME

RANDOM_MIMI = "random-mimi(seed=0)"  # the name of the demo's random codec in index.json
ENCODE_BATCH = 8  # clips Mimi encodes at once (at most)
ENCODE_CHUNK_FRAMES = 25  # frames per streaming step (2 s): the one shape Mimi compiles for


def mimi_name(path: str | os.PathLike | None) -> str:
    return RANDOM_MIMI if path is None else str(Path(path).resolve())


class LazyMimi:
    """A Mimi loaded when first needed: kyutai weights from a path, or for `RANDOM_MIMI` random weights,
    whose codes mean nothing to a real model."""

    def __init__(self, name: str = RANDOM_MIMI, log: Callable[[str], None] = print):
        self.name, self._log = name, log
        self._mimi: Any = None  # the Mimi (not imported here: jax loads only where audio gets encoded)

    def get(self) -> Any:
        """The `Mimi`, loaded on the first call."""
        if self._mimi is None:
            from flmjax.mimi import Mimi  # jax: only where audio gets encoded

            if self.name == RANDOM_MIMI:
                self._log("Mimi: RANDOM weights (demo only; pass --mimi PATH for kyutai's codec)")
                self._mimi = Mimi.random(seed=0)
            else:
                self._mimi = Mimi.from_pretrained(self.name)
        return self._mimi


Encoder = Callable[[Any, Sequence[np.ndarray]], list[np.ndarray]]  # (mimi, clips) -> codes, as encode_batched


class CodesCache:
    """Mimi codes by clip: a folder of `.npy` files named by the SHA-256 of a clip's samples, under a
    subfolder for the codec (its name, and for weights on disk their size and time). The cache keeps a
    clip's first encoding; batches encode each row on its own (the demo's clips alone and 8 at a time give
    the same codes), so a warm cache prepares the records a cold one does (tests/test_prepare.py)."""

    def __init__(self, folder: str | os.PathLike, codec: str):
        weights = Path(codec)
        stamp = f"{weights.stat().st_size}:{weights.stat().st_mtime_ns}" if weights.is_file() else ""
        self.folder = Path(folder) / hashlib.sha256(f"{codec}|{stamp}".encode()).hexdigest()[:16]

    def wrap(self, encode: Encoder) -> Encoder:
        """`encode` for the clips not in the cache; every clip's codes, in order."""

        def cached(mimi: Any, clips: Sequence[np.ndarray]) -> list[np.ndarray]:
            paths = [
                self.folder / f"{hashlib.sha256(np.ascontiguousarray(c).tobytes()).hexdigest()}.npy" for c in clips
            ]
            out: list[np.ndarray | None] = [np.load(p) if p.exists() else None for p in paths]
            missing = [i for i, codes in enumerate(out) if codes is None]
            if missing:
                self.folder.mkdir(parents=True, exist_ok=True)
                for i, codes in zip(missing, encode(mimi, [clips[i] for i in missing])):
                    out[i] = codes
                    fd, tmp = tempfile.mkstemp(dir=self.folder, suffix=".npy")  # renamed: workers may share it
                    with os.fdopen(fd, "wb") as f:
                        np.save(f, codes)
                    os.replace(tmp, paths[i])
            return out  # type: ignore[return-value]

        return cached


def num_frames(num_samples: int) -> int:
    return -(-num_samples // SAMPLES_PER_FRAME)


def encode_batched(mimi: Any, clips: Sequence[np.ndarray], batch_size: int = ENCODE_BATCH) -> list[np.ndarray]:
    """Mimi codes int32 [8, ceil(N / 1920)] of each clip.

    Clips are sorted by length and streamed `batch_size` per local device at a time through Mimi's
    streaming encoder in chunks of ENCODE_CHUNK_FRAMES: whatever the lengths, Mimi compiles one shape per
    batch size (a power of two per device: a CPU pays for padding rows) and memory stays bounded for long
    dialog tracks. With several local devices the rows are sharded over them (each device encodes its
    rows; the parameters are replicated once). Shorter clips are zero-padded; Mimi is causal, so padding
    after a clip does not change its frames.
    """
    import jax

    codec = mimi.get() if isinstance(mimi, LazyMimi) else mimi
    devices = jax.local_devices()
    rows_sharding = _shard_rows(codec, devices) if len(devices) > 1 else None
    order = sorted(range(len(clips)), key=lambda i: len(clips[i]))
    chunk = ENCODE_CHUNK_FRAMES * SAMPLES_PER_FRAME
    out: list[np.ndarray | None] = [None] * len(clips)
    for b in range(0, len(order), batch_size * len(devices)):
        rows = order[b : b + batch_size * len(devices)]
        length = -(-max(len(clips[i]) for i in rows) // chunk) * chunk
        per_device = 1 << (-(-len(rows) // len(devices)) - 1).bit_length()
        pcm = np.zeros((per_device * len(devices), 1, length), dtype=np.float32)
        for r, i in enumerate(rows):
            pcm[r, 0, : len(clips[i])] = clips[i]
        stream = codec.streaming(pcm.shape[0])
        if rows_sharding is not None:
            stream.state = jax.device_put(stream.state, rows_sharding)  # every state leaf: streams first
        place = (lambda x: x) if rows_sharding is None else (lambda x: jax.device_put(x, rows_sharding))
        pieces = [np.asarray(stream.encode(place(pcm[..., t : t + chunk]))) for t in range(0, length, chunk)]
        codes = np.concatenate(pieces, -1)
        for r, i in enumerate(rows):
            out[i] = codes[r, :, : num_frames(len(clips[i]))].astype(np.int32)
    return out  # type: ignore[return-value]


def _shard_rows(codec: Any, devices: list[Any]) -> Any:
    """The sharding of a batch's rows over the local devices; replicates the codec's parameters there."""
    import jax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    mesh = Mesh(np.asarray(devices), ("rows",))
    replicated = NamedSharding(mesh, PartitionSpec())
    leaf = jax.tree_util.tree_leaves(codec.params)[0]
    if getattr(leaf, "sharding", None) != replicated:
        codec.params = jax.device_put(codec.params, replicated)
    return NamedSharding(mesh, PartitionSpec("rows"))


def silence_codes(mimi: Any) -> np.ndarray:
    """Codes [8, 1] of digital silence: the frame Mimi settles on (its first frames still see the start)."""
    codes = encode_batched(mimi, [np.zeros(ENCODE_CHUNK_FRAMES * SAMPLES_PER_FRAME, np.float32)])[0]
    return codes[:, -1:]
