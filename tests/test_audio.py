"""flmjax.audio: reading files (WAV, FLAC, OGG), bad files, downmix, resampling quality."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile

from flmjax.audio import AudioError, load_audio, prepare_for_mimi, resample, to_mono


def tone(freq: float, rate: int, seconds: float = 1.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def dominant_frequency(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[np.argmax(spectrum)])


def rms_db(x: np.ndarray, margin: int = 2000) -> float:
    """Level in dB of a (resampled) sine relative to the amplitude-0.5 sines made here; edges dropped."""
    x = x[margin:-margin]
    return float(20 * np.log10(np.sqrt(np.mean(x**2)) / (0.5 / np.sqrt(2)) + 1e-12))


@pytest.mark.parametrize(
    "fmt,subtype,atol", [("WAV", "PCM_16", 1 / 2**15), ("FLAC", "PCM_24", 1 / 2**23), ("WAV", "FLOAT", 0.0)]
)
def test_load_lossless_files(tmp_path, fmt, subtype, atol):
    stereo = np.stack([tone(440, 16000), tone(660, 16000, amplitude=0.25)])
    path = tmp_path / f"x.{fmt.lower()}"
    soundfile.write(path, stereo.T, 16000, format=fmt, subtype=subtype)
    pcm, rate = load_audio(path)
    assert rate == 16000 and pcm.dtype == np.float32 and pcm.shape == (2, 16000)
    np.testing.assert_allclose(pcm, stereo, atol=atol + 1e-7)


def test_load_ogg_vorbis(tmp_path):
    path = tmp_path / "x.ogg"
    soundfile.write(path, tone(440, 24000), 24000, format="OGG", subtype="VORBIS")
    pcm, rate = load_audio(path)
    assert rate == 24000 and pcm.shape[0] == 1 and abs(pcm.shape[1] - 24000) < 100
    assert dominant_frequency(pcm[0], rate) == pytest.approx(440, abs=2)  # lossy, but the same tone


def test_bad_files_name_the_file(tmp_path):
    missing = tmp_path / "missing.wav"
    with pytest.raises(FileNotFoundError, match="missing.wav"):
        load_audio(missing)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(AudioError, match="empty.wav"):
        load_audio(empty)
    corrupt = tmp_path / "corrupt.flac"
    corrupt.write_bytes(b"fLaC" + np.random.default_rng(0).bytes(4000))
    with pytest.raises(AudioError, match="corrupt.flac"):
        load_audio(corrupt)
    silent = tmp_path / "no_samples.wav"
    soundfile.write(silent, np.zeros((0, 1), np.float32), 16000)
    with pytest.raises(AudioError, match="no_samples.wav.*no samples"):
        load_audio(silent)


def test_to_mono_averages_channels():
    stereo = np.stack([np.ones(5, np.float32), -np.ones(5, np.float32) * 0.5])
    np.testing.assert_allclose(to_mono(stereo), np.full((1, 5), 0.25))
    assert to_mono(np.ones(7, np.float32)).shape == (1, 7)
    with pytest.raises(AudioError, match="float"):
        to_mono(np.ones((1, 5), np.int16))


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100, 48000])
def test_resample_to_24k_keeps_tones(rate):
    out = resample(tone(1000, rate)[None], rate, 24000)
    assert out.dtype == np.float32 and out.shape == (1, 24000)
    assert dominant_frequency(out[0], 24000) == pytest.approx(1000, abs=1.5)
    assert abs(rms_db(out[0])) < 0.05  # flat pass band
    if rate > 24000:  # 10 kHz is still in the pass band; faster sources keep it
        assert abs(rms_db(resample(tone(10000, rate)[None], rate, 24000)[0])) < 0.3


@pytest.mark.parametrize("rate", [44100, 48000])
def test_resample_rejects_what_would_alias(rate):
    # 15 kHz does not exist at 24 kHz; a naive decimator would fold it onto 9 kHz.
    out = resample(tone(15000, rate)[None], rate, 24000)
    assert rms_db(out[0]) < -65


def test_resample_identity_and_bad_rates():
    x = tone(100, 24000)[None]
    np.testing.assert_array_equal(resample(x, 24000, 24000), x)
    with pytest.raises(AudioError, match="from_rate"):
        resample(x, 0, 24000)
    with pytest.raises(AudioError, match="to_rate"):
        resample(x, 16000, 22.5)


def test_prepare_for_mimi_from_a_stereo_file(tmp_path):
    path = tmp_path / "stereo_44k.wav"
    left, right = tone(300, 44100, seconds=0.5), tone(300, 44100, seconds=0.5)
    soundfile.write(path, np.stack([left, right]).T, 44100, subtype="FLOAT")
    pcm = prepare_for_mimi(*load_audio(path))
    assert pcm.dtype == np.float32 and pcm.shape == (1, 12000)
    assert dominant_frequency(pcm[0], 24000) == pytest.approx(300, abs=2)
