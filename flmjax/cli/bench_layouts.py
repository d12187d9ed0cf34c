"""Throughput of stream assembly on one CPU core: samples/s of each layout, delays included.

Post-training: packing 8192-frame samples from (clip, sentence) pairs of 1-15 s with about 3.5 text tokens
per second, then `delay_sample`. Fine-tuning: 6-turn dialogs in the free-user-input layout, same. The
target beside each number: one training host must produce well over 10 samples/s (batch 256 over many
hosts leaves each a few samples per step).

    python launch/bench_layouts.py [--samples 200] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from flmjax.data.layouts import (
    AlignedPair,
    LayoutConfig,
    assemble_post_training,
    delay_sample,
    layout_response_tts_free,
)

TARGET_SAMPLES_PER_S = 10.0


def synthetic_pairs(rng: np.random.Generator, count: int) -> list[AlignedPair]:
    pairs = []
    for _ in range(count):
        frames = int(rng.integers(12, 188))  # 1-15 s
        tokens = rng.integers(0, 151643, max(1, int(frames / 12.5 * 3.5))).tolist()
        pairs.append(AlignedPair(rng.integers(0, 2048, (8, frames), dtype=np.int32), tokens))
    return pairs


def synthetic_dialog(rng: np.random.Generator) -> list[dict]:
    turns, t = [], 0
    for k in range(6):
        frames = int(rng.integers(25, 250))
        tokens = rng.integers(0, 151643, max(1, int(frames / 12.5 * 3.5))).tolist()
        turns.append(
            {
                "role": "user" if k % 2 == 0 else "model",
                "text_tokens": tokens,
                "start_frame": t,
                "end_frame": t + frames,
                "codes": rng.integers(0, 2048, (8, frames), dtype=np.int32),
            }
        )
        t += frames + int(rng.integers(0, 12))
    return turns


def timed(make_sample, count: int) -> tuple[float, int]:
    """Seconds per sample over `count` samples, and the frames of the last one."""
    make_sample()  # warm caches
    start = time.perf_counter()
    for _ in range(count):
        tokens, _ = make_sample()
    return (time.perf_counter() - start) / count, tokens.shape[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core: the number is per core
    rng = np.random.default_rng(args.seed)
    cfg = LayoutConfig()
    pool = synthetic_pairs(rng, 4000)
    dialogs = [synthetic_dialog(rng) for _ in range(50)]
    silence = rng.integers(0, 2048, (8, 4), dtype=np.int32)
    cursor = 0

    def post_training():
        nonlocal cursor
        window = pool[cursor : cursor + 120]
        sample, used = assemble_post_training(window, rng, cfg=cfg)
        cursor = (cursor + used) % (len(pool) - 120)
        return delay_sample(sample)

    def free_dialog():
        sample = layout_response_tts_free(dialogs[int(rng.integers(len(dialogs)))], silence, rng, cfg=cfg)
        return delay_sample(sample)

    print(f"{'layout':<34}{'frames':>8}{'ms/sample':>12}{'samples/s/core':>16}{'target/host':>13}")
    for name, make in (("post-training packing (8192)", post_training), ("response_tts_free, 6 turns", free_dialog)):
        seconds, num_frames = timed(make, args.samples)
        print(f"{name:<34}{num_frames:>8}{seconds * 1e3:>12.2f}{1 / seconds:>16.1f}{TARGET_SAMPLES_PER_S:>13.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
