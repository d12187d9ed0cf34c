"""Mimi encoding for preparation: length-sorted batches streamed through Mimi's encoder in fixed chunks.

`LazyMimi` loads the codec when first needed (a run that finds every shard done never loads it);
`encode_batched` turns clips of any lengths into codes with one compiled shape per batch size.
"""

from __future__ import annotations

import os
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
        codes = np.concatenate(
            [np.asarray(stream.encode(pcm[..., t : t + chunk])) for t in range(0, length, chunk)], -1
        )
        for r, i in enumerate(rows):
            out[i] = codes[r, :, : num_frames(len(clips[i]))].astype(np.int32)
    return out  # type: ignore[return-value]


def silence_codes(mimi: Any) -> np.ndarray:
    """Codes [8, 1] of digital silence: the frame Mimi settles on (its first frames still see the start)."""
    codes = encode_batched(mimi, [np.zeros(ENCODE_CHUNK_FRAMES * SAMPLES_PER_FRAME, np.float32)])[0]
    return codes[:, -1:]
