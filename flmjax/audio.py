"""Audio files in, Mimi-ready audio out: read (WAV, FLAC, OGG, MP3), downmix, resample to 24 kHz.

Arrays are float32 [channels, samples] in [-1, 1]; `prepare_for_mimi` returns [1, samples] at 24 kHz.
Decoding goes through libsndfile (the `soundfile` wheel bundles it); resampling is polyphase FIR
filtering (scipy's `resample_poly` with a Kaiser-windowed sinc), exact for rational rate ratios.
"""

from __future__ import annotations

import io
import math
import os
import shutil
import subprocess

import numpy as np
import scipy.signal
import soundfile

from flmjax.errors import FlmjaxError

MIMI_SAMPLE_RATE = 24_000
# Kaiser beta of the resampling low-pass: what would alias is ~70 dB down, and the pass band stays
# flat (< 0.3 dB) to 10 kHz when going to 24 kHz (checked in tests/test_audio.py).
RESAMPLE_KAISER_BETA = 8.0
TRIM_LEVEL = 1e-3  # |sample| below this at either end of synthesized speech counts as silence
ESPEAK_MISSING = "espeak-ng not found: text turns need it (apt-get install espeak-ng), or give the turn an 'audio' file"


class AudioError(FlmjaxError):
    """Audio that cannot be used: an unreadable or empty file, or a malformed array."""


def load_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Read an audio file -> (float32 [channels, samples] in [-1, 1], sample rate in Hz)."""
    from flmjax import storage

    if storage.is_remote(path):  # an object in a store: its bytes (FileNotFoundError when it is not there)
        return decode_audio(storage.read_bytes(path), str(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"audio file not found: {path}")
    return _decode(os.fspath(path), str(path))


def decode_audio(data: bytes, name: str) -> tuple[np.ndarray, int]:
    """`load_audio` of a file's bytes (a dataset's embedded audio, an object read from a bucket)."""
    return _decode(io.BytesIO(data), name)


def _decode(file: str | io.BytesIO, name: str) -> tuple[np.ndarray, int]:
    try:
        data, sample_rate = soundfile.read(file, dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        raise AudioError(f"cannot decode audio file {name}: {err}") from None
    if data.shape[0] == 0:
        raise AudioError(f"audio file {name} holds no samples")
    return np.ascontiguousarray(data.T), int(sample_rate)


def _as_channels(pcm: np.ndarray, who: str) -> np.ndarray:
    pcm = np.asarray(pcm)
    if pcm.ndim == 1:
        pcm = pcm[None]
    if pcm.ndim != 2 or pcm.shape[1] == 0:
        raise AudioError(f"{who} expects audio shaped [channels, samples] or [samples], got shape {pcm.shape}")
    if not np.issubdtype(pcm.dtype, np.floating):
        raise AudioError(f"{who} expects float audio in [-1, 1], got dtype {pcm.dtype}")
    return pcm


def to_mono(pcm: np.ndarray) -> np.ndarray:
    """[channels, samples] (or [samples]) -> float32 [1, samples], the mean of the channels."""
    return _as_channels(pcm, "to_mono").mean(axis=0, keepdims=True, dtype=np.float32)


def resample(pcm: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """[channels, samples] at `from_rate` -> float32 [channels, round(samples * to_rate / from_rate)]."""
    pcm = _as_channels(pcm, "resample")
    for name, rate in (("from_rate", from_rate), ("to_rate", to_rate)):
        if int(rate) != rate or rate <= 0:
            raise AudioError(f"resample: {name} must be a positive whole number of Hz, got {rate}")
    from_rate, to_rate = int(from_rate), int(to_rate)
    if from_rate == to_rate:
        return pcm.astype(np.float32, copy=True)
    common = math.gcd(from_rate, to_rate)
    out = scipy.signal.resample_poly(
        pcm.astype(np.float64), to_rate // common, from_rate // common, axis=-1, window=("kaiser", RESAMPLE_KAISER_BETA)
    )
    return out.astype(np.float32)


def prepare_for_mimi(pcm: np.ndarray, sample_rate: int) -> np.ndarray:
    """Any float audio ([channels, samples] or [samples]) at any rate -> float32 [1, samples] mono, 24 kHz."""
    return resample(to_mono(pcm), sample_rate, MIMI_SAMPLE_RATE)


def espeak(text: str, voice: str = "en-us", speed: int | None = None) -> np.ndarray:
    """espeak-ng (`speed` in words per minute, default espeak's 175) -> float32 mono at 24 kHz, leading and
    trailing silence trimmed: what scripted users say and what the synthetic curriculum is made of."""
    if shutil.which("espeak-ng") is None:
        raise AudioError(ESPEAK_MISSING)
    cmd = ["espeak-ng", "-v", voice, *(["-s", str(speed)] if speed else []), "--stdout", text]
    run = subprocess.run(cmd, capture_output=True)
    if run.returncode != 0 or not run.stdout:
        raise AudioError(f"espeak-ng -v {voice} failed: {run.stderr.decode(errors='replace').strip()[:200]}")
    pcm, rate = soundfile.read(io.BytesIO(run.stdout), dtype="float32", always_2d=True)
    pcm = resample(pcm.T, rate, MIMI_SAMPLE_RATE)[0]
    loud = np.flatnonzero(np.abs(pcm) > TRIM_LEVEL)
    if not loud.size:
        raise AudioError(f"espeak-ng -v {voice} produced silence for {text!r}")
    return pcm[loud[0] : loud[-1] + 1]
