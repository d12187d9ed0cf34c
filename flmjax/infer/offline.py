"""Whole recordings through the streaming decoder, frame by frame, as a live conversation would see them."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple

import jax
import numpy as np
import soundfile

from flmjax import audio
from flmjax.infer.decoder import Decoder, DecoderState
from flmjax.infer.sampling import SamplingSettings
from flmjax.infer.session import Session
from flmjax.tokens import SAMPLE_RATE


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


def aged_state(state: DecoderState, length: int) -> DecoderState:
    """`state` as if every stream had decoded `length` frames, for timing: the offset and the ring's
    slot positions are set (the cost of a frame depends on them), the keys are left as they are."""
    window = state.kv.window
    slots = np.arange(window)
    newest = length - 1 - (length - 1 - slots) % window  # the latest position p < length in slot p % W
    pos = np.where(newest >= max(0, length - window), newest, -1).astype(np.int32)
    batch = state.offset.shape[0]
    offset = jax.numpy.full((batch,), length, jax.numpy.int32)
    return state._replace(offset=offset, kv=state.kv._replace(pos=jax.numpy.asarray(np.tile(pos, (batch, 1)))))


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


class UserAudio(NamedTuple):
    pcm: np.ndarray  # float32 [N] mono at 24 kHz
    sample_rate: int  # the file's
    num_samples: int  # the file's


def read_user_audio(path: str) -> UserAudio:
    """A recording as mono 24 kHz float32 (channels averaged, resampled); one-line errors for bad files."""
    pcm, sample_rate = audio.load_audio(path)
    mono = audio.to_mono(pcm)
    if not np.all(np.isfinite(mono)):
        raise audio.AudioError(f"{path}: audio holds NaN or infinite samples")
    return UserAudio(audio.resample(mono, sample_rate, SAMPLE_RATE)[0], sample_rate, mono.shape[-1])


def write_reply_audio(path: str, reply: np.ndarray, like: UserAudio) -> None:
    """Write the 24 kHz reply as 16-bit wav at the input's sample rate and exact length (time-aligned)."""
    reply = audio.resample(reply, SAMPLE_RATE, like.sample_rate)[0]
    out = np.zeros(like.num_samples, np.float32)
    out[: min(len(reply), like.num_samples)] = reply[: like.num_samples]
    soundfile.write(path, np.clip(out, -1.0, 1.0), like.sample_rate, subtype="PCM_16")


def reply_to_audio(session: Session, pcm: np.ndarray) -> tuple[np.ndarray, str, list[float]]:
    """Stream mono 24 kHz pcm [N] through stream 0 of a batch-1 session, frame by frame.

    Returns the reply [N] (frame k answers while input frame k is heard; the last partial frame is
    zero-padded on the way in and cut on the way out), the monologue text and per-frame latencies
    (compilation excluded: the session is warmed up first).
    """
    size = session.frame_size
    frames = -(-len(pcm) // size)
    padded = np.zeros(frames * size, np.float32)
    padded[: len(pcm)] = pcm
    session.warm_up()
    reply, text = [], []

    def one(i: int):
        result = session.step(padded[i * size : (i + 1) * size])
        reply.append(result.pcm[0])
        text.append(result.text[0])
        return result.pcm

    times = timed_frames(one, frames)
    return np.concatenate(reply)[: len(pcm)], "".join(text), times
