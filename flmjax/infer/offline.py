"""Whole recordings through the streaming decoder, frame by frame, as a live conversation would see them."""

from __future__ import annotations

import time
from typing import Callable

import jax
import numpy as np

from flmjax.infer.decoder import Decoder, DecoderState
from flmjax.infer.sampling import SamplingSettings


def latency_stats(seconds: list[float]) -> dict[str, float]:
    """Per-frame latencies (s) -> {"frames", "mean_ms", "p50_ms", "p99_ms"}."""
    ms = np.asarray(seconds) * 1e3
    if ms.size == 0:
        return {"frames": 0, "mean_ms": float("nan"), "p50_ms": float("nan"), "p99_ms": float("nan")}
    return {
        "frames": int(ms.size),
        "mean_ms": float(ms.mean()),
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
    }


def timed_frames(step: Callable[[int], object], frames: int) -> list[float]:
    """Run `step(i)` for every frame (its result fetched to the host), returning each frame's wall time."""
    times = []
    for i in range(frames):
        start = time.perf_counter()
        jax.block_until_ready(step(i))
        times.append(time.perf_counter() - start)
    return times


def check_user_codes(codes: np.ndarray, codebooks: int, codebook_size: int) -> np.ndarray:
    """Validate user codes int [B, S, codebooks] in [0, codebook_size); a one-line error otherwise."""
    if codes.ndim != 3 or codes.shape[-1] != codebooks or codes.shape[1] < 2:
        raise ValueError(f"user codes must be int [B, S >= 2, {codebooks}], got shape {list(codes.shape)}")
    if not np.issubdtype(codes.dtype, np.integer):
        raise ValueError(f"user codes must be integers, got {codes.dtype}")
    if codes.min() < 0 or codes.max() >= codebook_size:
        raise ValueError(f"user codes must lie in [0, {codebook_size}), got [{codes.min()}, {codes.max()}]")
    return codes.astype(np.int32)


def decode_user_codes(
    decoder: Decoder, user_codes: np.ndarray, settings: SamplingSettings
) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Stream user codes [B, S, 8] through a fresh decoder state (batch = B).

    Returns the output frames [B, S-1, 9] of steps 1..S-1 (text id + 8 codes, as the release's loop
    returns them), every sampled column [B, S, 9] (delayed columns 1..S: text + 8 speak codes) and the
    per-frame latencies (compilation excluded: a throwaway state is stepped first).
    """
    ids = decoder.config.tokens
    codes = check_user_codes(np.asarray(user_codes), ids.num_codebooks, ids.codebook_size)
    if codes.shape[0] != decoder.batch_size:
        raise ValueError(f"{codes.shape[0]} streams for a decoder of batch {decoder.batch_size}")
    warm, _ = decoder.step(decoder.init_state(settings), codes[:, 0])
    jax.block_until_ready(warm)
    del warm
    state: DecoderState = decoder.init_state(settings)
    frames, columns = [], []

    def one(i: int):
        nonlocal state
        state, out = decoder.step(state, codes[:, i])
        frame, column = np.asarray(out.frame), np.asarray(out.column)
        if i > 0:
            frames.append(frame)
        columns.append(column)
        return frame

    times = timed_frames(one, codes.shape[1])
    return np.stack(frames, axis=1), np.stack(columns, axis=1), times
