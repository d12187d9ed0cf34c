"""Throughput of the whole input pipeline on one CPU core: prepared records -> delayed batches.

Writes synthetic prepared corpora shaped like real ones (post-training pairs of 1-15 s with about 3.5
text tokens per second; 6-turn dialogs with pre-encoded listen variants) into a temporary folder, then
times `flmjax.data.pipeline.batch_dataset` (record reads, mixing, packing or dialog layout, delays,
batching) in this process (worker_count 0). The reference beside each number: a 7B step at global batch
256 takes seconds, so one host must produce well over 10 samples/s; grain workers multiply the figure
by about the number of cores given to them.

    python launch/bench_data.py [--batches 8] [--batch 16] [--mimi-minutes 1]

With --mimi-minutes M it also times preparation's Mimi encoding (random weights, the same cost as
kyutai's) of M minutes of audio on this machine's CPU cores: the price of each pre-encoded augmented
variant of the SFT dialogs (docs/data.md, "Augmentation").
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from flmjax.data import layouts, records
from flmjax.data.config import get_data_config
from flmjax.data.pipeline import batch_dataset
from flmjax.tokens import RELEASE_TOKENS

TARGET_SAMPLES_PER_S = 10.0


def write_pairs(root: Path, count: int, rng: np.random.Generator) -> None:
    recs = []
    for i in range(count):
        frames = int(rng.integers(12, 188))  # 1-15 s
        tokens = rng.integers(0, 151643, max(1, int(frames / 12.5 * 3.5)))
        recs.append(records.pair_record({"id": str(i)}, rng.integers(0, 2048, (8, frames)), tokens, None))
    records.write_shard(root, 0, recs, {"fingerprint": "bench", "errors": []})
    records.write_index(root, {"kind": "speech", "records": count, "shards": [{"shard": 0, "records": count}],
                               "silence_codes": [[0]] * 8})  # fmt: skip


def write_dialogs(root: Path, count: int, variants: int, layout: str, rng: np.random.Generator) -> None:
    recs = []
    for i in range(count):
        turns, t = [], 0
        for k in range(6):
            frames = int(rng.integers(25, 250))
            tokens = rng.integers(0, 151643, max(1, int(frames / 12.5 * 3.5))).tolist()
            turns.append(layouts.Turn(role="user" if k % 2 == 0 else "model", codes=rng.integers(0, 2048, (8, frames)),
                                      text_tokens=tokens, start_frame=t, end_frame=t + frames))  # fmt: skip
            t += frames + int(rng.integers(0, 12))
        plans = [
            layouts.plan_dialog(turns, layout, np.random.default_rng([i, v]), RELEASE_TOKENS) for v in range(variants)
        ]
        listen = [rng.integers(0, 2048, (8, p.num_frames - 1)) for p in plans]
        recs.append(records.dialog_record({"id": str(i)}, turns, plans, listen))
    records.write_shard(root, 0, recs, {"fingerprint": "bench", "errors": []})
    records.write_index(root, {"kind": "dialogs", "records": count, "shards": [{"shard": 0, "records": count}],
                               "layout": layout, "variants": variants, "silence_codes": [[0]] * 8})  # fmt: skip


def timed(config, roots, batches: int) -> float:
    """Samples per second over `batches` batches, after one warm-up batch."""
    it = iter(batch_dataset(config, roots))
    next(it)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * config.global_batch / (time.perf_counter() - start)


def mimi_seconds_per_minute(minutes: float, rng: np.random.Generator) -> tuple[float, float]:
    """(compile + first batch seconds, steady seconds per minute of audio) of `encode_batched`."""
    from flmjax.data.encoding import ENCODE_BATCH, encode_batched
    from flmjax.mimi import Mimi

    mimi = Mimi.random(seed=0)
    clip = lambda seconds: (0.1 * rng.standard_normal(int(seconds * 24_000))).astype(np.float32)  # noqa: E731
    start = time.perf_counter()
    encode_batched(mimi, [clip(2.0)] * ENCODE_BATCH)
    warm = time.perf_counter() - start
    clips = [clip(minutes * 60 / ENCODE_BATCH)] * ENCODE_BATCH
    start = time.perf_counter()
    encode_batched(mimi, clips)
    return warm, (time.perf_counter() - start) / minutes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--batch", type=int, default=16, help="samples per batch (the host's share)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mimi-minutes", type=float, default=0.0, help="also time Mimi encoding of this much audio")
    args = parser.parse_args(argv)
    if args.mimi_minutes > 0:  # before pinning: encoding uses every core it is given
        warm, per_minute = mimi_seconds_per_minute(args.mimi_minutes, np.random.default_rng(args.seed))
        cores = len(os.sched_getaffinity(0))
        print(
            f"Mimi encode ({cores} CPU cores, batch 8): {per_minute:.1f} s per minute of audio "
            f"({60 / per_minute:.1f}x real time); compile + first batch {warm:.1f} s"
        )
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core: the number is per core
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        auto, human, dialogs = Path(tmp, "auto"), Path(tmp, "human"), Path(tmp, "dialogs")
        write_pairs(auto, 4000, rng)
        write_pairs(human, 400, rng)
        write_dialogs(dialogs, 200, 6, "response_tts_free", rng)
        post2 = get_data_config("post2", global_batch=args.batch)
        ft2 = get_data_config("ft2", global_batch=args.batch)
        rows = [
            ("post2: pairs packed to 8192 frames", post2, [auto, human]),
            ("ft2: dialogs padded to 4096 frames", ft2, [dialogs]),
        ]
        print(f"{'pipeline (one core, worker_count 0)':38s} {'frames':>7s} {'samples/s':>10s} {'target/host':>12s}")
        for name, config, roots in rows:
            rate = timed(config, roots, args.batches)
            print(f"{name:38s} {config.seq_len:7d} {rate:10.1f} {TARGET_SAMPLES_PER_S:12.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
