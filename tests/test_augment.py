"""Listen-channel augmentation: loudness bounds measured on the output, leakage exact on an impulse."""

import numpy as np
import pytest

from flmjax.config import ConfigError
from flmjax.data.augment import (
    AugmentConfig,
    add_leakage,
    apply_gain,
    augment_listen,
    loudness_db,
    noise_track,
    plan_waveforms,
    scale_to_loudness,
    synthetic_noise,
)
from flmjax.data.layouts import LayoutConfig, plan_dialog

SR = 24_000


def measured_db(wave):
    return 20 * np.log10(np.sqrt(np.mean(np.asarray(wave, np.float64) ** 2)) + 1e-6)


def speech_like(seconds, db, seed):
    """Pink noise under a syllable-rate envelope, at a given loudness."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    envelope = 0.55 + 0.45 * np.sin(2 * np.pi * 4.0 * np.arange(n) / SR + rng.uniform(0, 6))
    return scale_to_loudness(synthetic_noise("pink", n, rng) * envelope, db)


def test_loudness_is_the_papers_formula():
    t = np.arange(SR) / SR
    sine = 0.5 * np.sin(2 * np.pi * 440 * t)
    assert loudness_db(sine) == pytest.approx(20 * np.log10(0.5 / np.sqrt(2) + 1e-6), abs=1e-6)
    assert loudness_db(np.zeros(100)) == pytest.approx(-120.0)
    for db in (-70.0, -40.0, -12.5):
        assert measured_db(scale_to_loudness(sine, db)) == pytest.approx(db, abs=1e-4)


@pytest.mark.parametrize("kind,slope", [("white", 0.0), ("pink", -1.0), ("brown", -2.0)])
def test_synthetic_noise_has_its_spectral_slope(kind, slope):
    noise = synthetic_noise(kind, 1 << 16, np.random.default_rng(0))
    assert np.sqrt(np.mean(noise.astype(np.float64) ** 2)) == pytest.approx(1.0, rel=1e-4)
    power = np.mean(np.abs(np.fft.rfft(noise.reshape(64, 1024), axis=1)) ** 2, axis=0)
    bins = np.arange(4, 256)
    fitted = np.polyfit(np.log(bins), np.log(power[bins]), 1)[0]
    assert fitted == pytest.approx(slope, abs=0.08)


def test_noise_segments_lie_in_their_loudness_range_or_are_silence():
    rng = np.random.default_rng(1)
    bank = [synthetic_noise(k, int(s * SR), rng) for k, s in (("white", 3), ("pink", 2), ("brown", 6))]
    cfg = AugmentConfig()
    silent = total = 0
    for seed in range(10):
        track, segments = noise_track(30 * SR, bank, np.random.default_rng(seed), cfg)
        assert track.shape == (30 * SR,) and segments[0].start == 0 and segments[-1].end == 30 * SR
        for previous, seg in zip(segments, segments[1:]):
            assert previous.end == seg.start  # concatenated, no holes
        for seg in segments:
            piece = track[seg.start : seg.end]
            assert 0 < seg.end - seg.start <= 5 * SR
            if seg.loudness_db is None:
                assert not piece.any()
                silent += 1
            else:
                assert -70.0 <= measured_db(piece) <= -40.0
                assert measured_db(piece) == pytest.approx(seg.loudness_db, abs=1e-3)
            total += 1
    assert total > 100 and abs(silent / total - 0.3) < 0.1
    with pytest.raises(ValueError, match="noise bank is empty"):
        noise_track(100, [], np.random.default_rng(0))


def test_gain_draws_and_the_loudness_floor():
    cfg = AugmentConfig()
    applied = 0
    for seed in range(400):
        rng = np.random.default_rng(seed)
        utterance = speech_like(0.3, float(rng.uniform(-60, -10)), seed)
        rms = np.sqrt(np.mean(utterance.astype(np.float64) ** 2))
        out, gain = apply_gain(utterance, rng, cfg)
        after = measured_db(out)
        assert after >= -40.0 - 1e-4  # the floor, measured
        if gain is not None:
            applied += 1
            assert -24.0 <= gain <= 20.0
        gained = 20 * np.log10(rms * 10 ** ((gain or 0.0) / 20) + 1e-6)
        assert after == pytest.approx(max(gained, -40.0), abs=1e-4)
    assert abs(applied / 400 - 0.6) < 0.07
    quiet = speech_like(0.3, -65.0, 0)
    out, _ = apply_gain(quiet, np.random.default_rng(0), AugmentConfig(gain_prob=0.0))
    assert measured_db(out) == pytest.approx(-40.0, abs=1e-4)


def test_leakage_delay_and_gain_are_exact_on_an_impulse():
    speak = np.zeros(SR, np.float32)
    speak[1000] = 1.0
    listen = np.zeros(SR, np.float32)
    cfg = AugmentConfig(leakage_prob=1.0)
    for seed in range(40):
        out, leak = add_leakage(listen, speak, np.random.default_rng(seed), cfg)
        assert 0.0 <= leak.gain <= 0.2 and int(0.1 * SR) <= leak.delay <= int(0.5 * SR)
        assert np.flatnonzero(out).tolist() == ([1000 + leak.delay] if leak.gain > 0 else [])
        assert out[1000 + leak.delay] == np.float32(leak.gain)
    out, leak = add_leakage(listen + 0.5, speak, np.random.default_rng(0), AugmentConfig(leakage_prob=0.0))
    assert leak is None and (out == 0.5).all()
    hits = sum(add_leakage(listen, speak, np.random.default_rng(s))[1] is not None for s in range(500))
    assert abs(hits / 500 - 0.3) < 0.06


def test_augmented_listen_track_of_a_planned_dialog():
    spf = 1920
    dialog = []
    for k, (role, n, start) in enumerate((("user", 10, 0), ("model", 30, 10), ("user", 12, 25), ("model", 8, 40))):
        dialog.append(
            {
                "role": role,
                "codes": np.zeros((8, n), np.int32),
                "text_tokens": [10 + k],
                "start_frame": start,
                "end_frame": start + n,
            }
        )
    plan = plan_dialog(dialog, "response_tts_free", np.random.default_rng(0), cfg=LayoutConfig(interruption_prob=0.0))
    response = plan.segments[1]
    assert response.cut_frame is not None  # the corpus' user turn 2 starts 15 frames before the model ends
    waves = [speech_like(t["codes"].shape[1] * spf / SR, -25.0, k) for k, t in enumerate(dialog)]
    utterances, speak, num_samples = plan_waveforms(plan, waves)
    assert num_samples == (plan.num_frames - 1) * spf
    assert [u[0] for u in utterances] == [(s.audio_start - 1) * spf for s in plan.segments if s.channel == "listen"]
    a0, cut = (response.audio_start - 1) * spf, (response.cut_frame - 1) * spf
    np.testing.assert_array_equal(speak[a0:cut], waves[1][: cut - a0])
    assert not speak[cut : (plan.segments[3].audio_start - 1) * spf].any()  # silent after the cut
    cfg = AugmentConfig(gain_prob=0.0, leakage_prob=0.0)
    bank = [synthetic_noise("white", 2 * SR, np.random.default_rng(5))]
    clean = augment_listen(utterances, num_samples, np.random.default_rng(3), cfg)
    for start, wave in utterances:
        np.testing.assert_array_equal(clean[start : start + wave.size], wave)
    noisy = augment_listen(utterances, num_samples, np.random.default_rng(3), cfg, bank, speak)
    np.testing.assert_array_equal(
        noisy, augment_listen(utterances, num_samples, np.random.default_rng(3), cfg, bank, speak)
    )
    rng = np.random.default_rng(3)  # the same draws, step by step: gains, then the noise track
    for _, wave in utterances:
        apply_gain(wave, rng, cfg)
    noise, segments = noise_track(num_samples, bank, rng, cfg)
    assert any(s.loudness_db is not None for s in segments)
    np.testing.assert_array_equal(noisy, clean + noise)


def test_bad_augment_config():
    with pytest.raises(ConfigError, match="gain_prob"):
        AugmentConfig(gain_prob=1.5)
    with pytest.raises(ConfigError, match="noise_db"):
        AugmentConfig(noise_db=(-40.0, -70.0))
    with pytest.raises(ValueError, match="noise kind"):
        synthetic_noise("blue", 10, np.random.default_rng(0))
