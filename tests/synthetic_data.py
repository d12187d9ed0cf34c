"""Synthetic training data for trainer tests: batches with the data pipeline's interface, and small
prepared corpora the real pipeline reads.

Batches are delayed columns like the real pipeline's ({"tokens": int32 [B, T+1, 17], "weights": float32
[B, T+1, 17]}) from a checkpointable Grain iterator: learnable patterns (a text run, `<wait>`, speak
codes that repeat with the text) so a loss can fall in a few steps, zero weight on the listen streams
and on padding. Prepared corpora (`write_speech_corpus`) hold text ids a small model's vocabulary has.
"""

from __future__ import annotations

from pathlib import Path

import grain
import numpy as np

from flmjax.config import ModelConfig
from flmjax.data import records
from flmjax.tokens import delay_streams


def synthetic_sample(config: ModelConfig, frames: int, index: int, seed: int = 0) -> dict[str, np.ndarray]:
    ids = config.tokens
    rng = np.random.default_rng([seed, index])
    k = ids.num_codebooks
    raw = np.empty((frames, ids.num_streams), np.int32)
    motif = rng.integers(0, 8, size=4)
    text = np.where(np.arange(frames) % 3 == 0, ids.text_wait, motif[np.arange(frames) % 4] * 7)
    raw[:, 0] = text
    raw[:, 1 : 1 + k] = (text[:, None] * 13 + np.arange(k)[None, :] * 5) % ids.codebook_size
    raw[:, 1 + k :] = rng.integers(0, ids.codebook_size, size=(frames, k))
    raw[0] = ids.initial_column  # the decoder's initial frame, as the layouts place it
    weights = np.zeros(raw.shape, np.float32)
    used = frames - int(rng.integers(0, frames // 4 + 1))  # some padding frames carry no loss
    weights[1:used, : 1 + k] = 1.0
    return {"tokens": delay_streams(raw, ids), "weights": delay_streams(weights, ids, fill=np.zeros(ids.num_streams))}


def synthetic_dataset(config: ModelConfig, frames: int, num_samples: int, seed: int = 0) -> grain.MapDataset:
    """`num_samples` samples of `frames` raw frames (so T + 1 = frames + 1 delayed columns)."""
    return grain.MapDataset.range(num_samples).map(lambda i: synthetic_sample(config, frames, int(i), seed))


def synthetic_batches(
    config: ModelConfig, frames: int, num_samples: int, batch: int, seed: int = 0, shard: tuple[int, int] = (0, 1)
) -> grain.DatasetIterator:
    """Shuffled, repeated per-host batches of `batch` samples; this host takes every `shard[1]`-th sample."""
    index, count = shard
    ds = synthetic_dataset(config, frames, num_samples, seed)[index::count]
    return ds.shuffle(seed=seed).repeat().batch(batch, drop_remainder=True).to_iter_dataset().__iter__()


def write_speech_corpus(root: Path, num_pairs: int, text_vocab: int, seed: int = 0) -> Path:
    """A prepared corpus of (clip, sentence) pairs (random codes, 10..40 frames; 3..8 text ids below
    `text_vocab`, so small test models can read it) in the data pipeline's on-disk format."""
    rng = np.random.default_rng(seed)
    pairs = [
        records.pair_record(
            {"id": f"pair{i}"},
            rng.integers(0, 2048, (8, int(rng.integers(10, 40)))),
            rng.integers(0, text_vocab, int(rng.integers(3, 9))),
            None,
        )
        for i in range(num_pairs)
    ]
    records.write_shard(root, 0, pairs, {"fingerprint": "synthetic", "errors": []})
    silence = np.zeros((8, 1), np.int32)
    records.write_index(root, {"kind": "speech", "records": num_pairs, "shards": [{"shard": 0, "records": num_pairs}],
                               "silence_codes": silence.tolist()})  # fmt: skip
    return root


def synthetic_pair(config: ModelConfig, frames: int, index: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A preference pair in the DPO batch's keys: a user speaks (random listen codes) for 6..10 frames,
    then is silent; the chosen reply (a text run, speech codes that follow it) starts when the user
    stops, the rejected one, the same reply, 5..8 frames later. Silence is speak code 1, listen code 0."""
    ids = config.tokens
    rng = np.random.default_rng([seed, index, 1])
    k = ids.num_codebooks
    user_end, delay = int(rng.integers(6, 11)), int(rng.integers(5, 9))
    text = rng.integers(2, 40, size=4) * 7
    speech = (np.repeat(text, 2)[:, None] * 13 + np.arange(k)[None, :] * 5) % ids.codebook_size
    listen = np.zeros((frames, k), np.int32)
    listen[1:user_end] = rng.integers(2, ids.codebook_size, size=(user_end - 1, k))
    sides = {}
    for name, onset in (("chosen", user_end), ("rejected", user_end + delay)):
        raw = np.empty((frames, ids.num_streams), np.int32)
        raw[:, 0] = ids.text_wait
        raw[onset : onset + len(text), 0] = text
        raw[:, 1 : 1 + k] = 1
        raw[onset + 2 : onset + 2 + len(speech), 1 : 1 + k] = speech
        raw[:, 1 + k :] = listen
        raw[0] = ids.initial_column
        weights = np.zeros(raw.shape, np.float32)
        weights[1:, : 1 + k] = 1.0
        sides[name] = (delay_streams(raw, ids), delay_streams(weights, ids, fill=np.zeros(ids.num_streams)))
    (tokens, weights), (rejected, rejected_weights) = sides["chosen"], sides["rejected"]
    return {"tokens": tokens, "weights": weights, "rejected_tokens": rejected, "rejected_weights": rejected_weights}


def synthetic_pair_batch(config: ModelConfig, frames: int, indices, seed: int = 0) -> dict[str, np.ndarray]:
    pairs = [synthetic_pair(config, frames, int(i), seed) for i in indices]
    return {key: np.stack([p[key] for p in pairs]) for key in pairs[0]}


def synthetic_pair_batches(config: ModelConfig, frames: int, num_pairs: int, batch: int, seed: int = 0):
    """Repeated, checkpointable per-host batches of `synthetic_pair`s (the DPO trainer's input)."""
    ds = grain.MapDataset.range(num_pairs).map(lambda i: synthetic_pair(config, frames, int(i), seed))
    return ds.shuffle(seed=seed).repeat().batch(batch, drop_remainder=True).to_iter_dataset().__iter__()
