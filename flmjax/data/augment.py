"""Waveform augmentation of the listen channel for SFT (training.md section 3, the papers' appendix B).

Applied to the user's track before it is Mimi-encoded: gain on user utterances, concatenated noise
segments, and (final stage) leakage of the model's own speech into the microphone. Everything is numpy,
mono float at 24 kHz, and drawn from a caller's seeded `np.random.Generator`, so a sample is reproducible.
Loudness follows the papers: `dB = 20 * log10(rms + 1e-6)`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from flmjax.config import ConfigError
from flmjax.data.layouts import Channel, DialogPlan
from flmjax.tokens import SAMPLE_RATE, SAMPLES_PER_FRAME

NOISE_KINDS = ("white", "pink", "brown")
_RMS_EPS = 1e-6  # the papers' loudness formula


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Augmentation parameters; defaults are the papers'. Set a probability to 0 to turn a step off."""

    sample_rate: int = SAMPLE_RATE
    noise_db: tuple[float, float] = (-70.0, -40.0)  # loudness of each noise segment
    noise_silence_prob: float = 0.3  # a noise segment is replaced by silence
    noise_segment_s: tuple[float, float] = (1.0, 5.0)  # *(choice)* length of one noise segment
    gain_prob: float = 0.6  # a user utterance gets a random gain
    gain_db: tuple[float, float] = (-24.0, 20.0)
    min_loudness_db: float = -40.0  # floor of every user utterance after gain
    leakage_prob: float = 0.3  # the model's speech leaks into the listen track (final stage only)
    leakage_gain: tuple[float, float] = (0.0, 0.2)
    leakage_delay_s: tuple[float, float] = (0.1, 0.5)

    def __post_init__(self) -> None:
        for name in ("noise_silence_prob", "gain_prob", "leakage_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"AugmentConfig: {name} must lie in [0, 1], got {getattr(self, name)}")
        for name in ("noise_db", "noise_segment_s", "gain_db", "leakage_gain", "leakage_delay_s"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ConfigError(f"AugmentConfig: {name} must be (low, high) with low <= high, got {(lo, hi)}")
        if self.noise_segment_s[0] <= 0 or self.leakage_delay_s[0] < 0 or self.sample_rate <= 0:
            raise ConfigError("AugmentConfig: noise segments, leakage delays and the sample rate must be positive")


class NoiseSegment(NamedTuple):
    start: int  # samples
    end: int
    loudness_db: float | None  # None: replaced by silence


class Leakage(NamedTuple):
    gain: float
    delay: int  # samples


def loudness_db(wave: np.ndarray) -> float:
    """The papers' loudness: 20 * log10(rms + 1e-6)."""
    wave = np.asarray(wave, dtype=np.float64)
    rms = float(np.sqrt(np.mean(wave * wave))) if wave.size else 0.0
    return 20.0 * np.log10(rms + _RMS_EPS)


def scale_to_loudness(wave: np.ndarray, target_db: float) -> np.ndarray:
    """`wave` scaled so that `loudness_db` gives `target_db` exactly; silence stays silence."""
    wave = np.asarray(wave, dtype=np.float32)
    rms = float(np.sqrt(np.mean(np.square(wave, dtype=np.float64)))) if wave.size else 0.0
    if rms == 0.0:
        return wave.copy()
    target_rms = 10.0 ** (target_db / 20.0) - _RMS_EPS
    return (wave * np.float32(target_rms / rms)).astype(np.float32)


def synthetic_noise(kind: str, num_samples: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-rms noise with power spectrum ~ f^0 (white), f^-1 (pink) or f^-2 (brown); for tests and demos."""
    if kind not in NOISE_KINDS:
        raise ValueError(f"noise kind must be one of {NOISE_KINDS}, got {kind!r}")
    white = rng.standard_normal(num_samples)
    if kind != "white":
        spectrum = np.fft.rfft(white)
        f = np.fft.rfftfreq(num_samples)
        f[0] = np.inf  # no DC: a random walk would drift without bound
        spectrum *= f ** (-0.5 if kind == "pink" else -1.0)
        white = np.fft.irfft(spectrum, n=num_samples)
    return (white / np.sqrt(np.mean(white * white))).astype(np.float32)


def noise_track(
    num_samples: int, noise_bank: Sequence[np.ndarray], rng: np.random.Generator, cfg: AugmentConfig = AugmentConfig()
) -> tuple[np.ndarray, list[NoiseSegment]]:
    """Concatenated random noise segments covering `num_samples`.

    Each segment is a random crop (`cfg.noise_segment_s`, at most the whole clip) of a random clip of the
    bank, scaled to a loudness drawn in `cfg.noise_db`, or silence with probability `cfg.noise_silence_prob`.
    """
    if not noise_bank:
        raise ValueError("noise_track: the noise bank is empty")
    track = np.zeros(num_samples, dtype=np.float32)
    segments: list[NoiseSegment] = []
    start = 0
    while start < num_samples:
        clip = np.asarray(noise_bank[int(rng.integers(len(noise_bank)))], dtype=np.float32)
        if clip.ndim != 1 or clip.size == 0:
            raise ValueError(f"noise_track: noise clips must be non-empty mono waveforms, got shape {clip.shape}")
        length = min(int(rng.uniform(*cfg.noise_segment_s) * cfg.sample_rate), clip.size, num_samples - start)
        length = max(length, 1)
        offset = int(rng.integers(clip.size - length + 1))
        if rng.random() < cfg.noise_silence_prob:
            segments.append(NoiseSegment(start, start + length, None))
        else:
            db = float(rng.uniform(*cfg.noise_db))
            track[start : start + length] = scale_to_loudness(clip[offset : offset + length], db)
            segments.append(NoiseSegment(start, start + length, db))
        start += length
    return track, segments


def apply_gain(
    utterance: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig = AugmentConfig()
) -> tuple[np.ndarray, float | None]:
    """A user utterance with a random gain (probability `cfg.gain_prob`), then raised to at least
    `cfg.min_loudness_db` (whether or not a gain was drawn); returns it and the gain in dB (None: none).
    No limiter: a loud utterance may leave [-1, 1], as the papers specify none.
    """
    wave = np.asarray(utterance, dtype=np.float32)
    gain = None
    if rng.random() < cfg.gain_prob:
        gain = float(rng.uniform(*cfg.gain_db))
        wave = wave * np.float32(10.0 ** (gain / 20.0))
    if loudness_db(wave) < cfg.min_loudness_db:
        wave = scale_to_loudness(wave, cfg.min_loudness_db)
    return wave.astype(np.float32), gain


def add_leakage(
    listen: np.ndarray, speak: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig = AugmentConfig()
) -> tuple[np.ndarray, Leakage | None]:
    """With probability `cfg.leakage_prob`, `listen` + gain * `speak` delayed (a loudspeaker's echo)."""
    out = np.array(listen, dtype=np.float32)
    if rng.random() >= cfg.leakage_prob:
        return out, None
    delay = int(round(rng.uniform(*cfg.leakage_delay_s) * cfg.sample_rate))
    leak = Leakage(float(rng.uniform(*cfg.leakage_gain)), delay)
    n = max(0, min(len(speak), len(out) - leak.delay))
    out[leak.delay : leak.delay + n] += np.float32(leak.gain) * np.asarray(speak[:n], dtype=np.float32)
    return out, leak


def plan_waveforms(
    plan: DialogPlan, waves: Sequence[np.ndarray], samples_per_frame: int = SAMPLES_PER_FRAME
) -> tuple[list[tuple[int, np.ndarray]], np.ndarray, int]:
    """The user utterances [(start sample, wave)] and the model's speaking track of a planned dialog.

    Sample 0 of the tracks is frame 1 of the plan (frame 0 is the decoder's initial frame), so a listen
    track built from them and Mimi-encoded is `render_dialog`'s `listen_codes`. A model turn cut by an
    interruption is cut in its waveform too. `waves[i]` is turn i's waveform.
    """
    num_samples = (plan.num_frames - 1) * samples_per_frame
    speak = np.zeros(num_samples, dtype=np.float32)
    utterances = []
    for seg in plan.segments:
        if seg.audio_start is None or seg.audio_end is None or seg.source is None:
            continue
        start = (seg.audio_start - 1) * samples_per_frame
        wave = np.asarray(waves[seg.source], dtype=np.float32)[: (seg.audio_end - seg.audio_start) * samples_per_frame]
        if seg.channel == Channel.LISTEN:
            utterances.append((start, wave))
        else:
            speak[start : start + wave.size] += wave[: num_samples - start]
    return utterances, speak, num_samples


def augment_listen(
    utterances: Sequence[tuple[int, np.ndarray]],
    num_samples: int,
    rng: np.random.Generator,
    cfg: AugmentConfig = AugmentConfig(),
    noise_bank: Sequence[np.ndarray] = (),
    speak: np.ndarray | None = None,
) -> np.ndarray:
    """The augmented listen track: user utterances (each through `apply_gain`) placed at their start
    samples, plus a `noise_track` when a noise bank is given, plus `add_leakage` of `speak` when given.
    """
    track = np.zeros(num_samples, dtype=np.float32)
    for start, utterance in utterances:
        wave, _ = apply_gain(utterance, rng, cfg)
        n = max(0, min(wave.size, num_samples - start))
        track[start : start + n] += wave[:n]
    if noise_bank:
        track += noise_track(num_samples, noise_bank, rng, cfg)[0]
    if speak is not None:
        track = add_leakage(track, speak, rng, cfg)[0]
    return track
