"""Silero VAD through onnxruntime equals silero's own get_speech_timestamps (torch, reference only)."""

import numpy as np
import silero_vad
import soundfile
import torch

from flmjax.eval import vad
from tests.eval_helpers import SHARED, place, speech


def reference(pcm16k: np.ndarray, onnx: bool) -> list[tuple[int, int]]:
    model = silero_vad.load_silero_vad(onnx=onnx)
    found = silero_vad.get_speech_timestamps(torch.from_numpy(pcm16k), model)
    return [(d["start"], d["end"]) for d in found]


def test_segments_equal_silero_on_benchmark_audio_and_placed_speech():
    tracks = [soundfile.read(p, dtype="float32")[0] for p in sorted(SHARED.glob("*/1/output.wav"))]
    tracks.append(place(6.0, [(0.4, speech("Hello there.")), (1.6, speech("uh")), (3.0, speech("How are you?"))]))
    for pcm in tracks:
        probs = vad.probabilities(pcm)[0]
        ours = vad.speech_segments(probs, len(pcm))
        assert ours, "every track holds speech"
        assert ours == reference(pcm, onnx=False) == reference(pcm, onnx=True)


def test_channels_are_independent_rows_of_one_batch():
    a = place(3.0, [(0.5, speech("One two three."))])
    b = place(3.0, [(1.5, speech("Four."))])
    both = vad.probabilities(np.stack([a, b]))
    np.testing.assert_array_equal(both[0], vad.probabilities(a)[0])
    np.testing.assert_array_equal(both[1], vad.probabilities(b)[0])


def test_any_rate_is_resampled_to_16k():
    pcm = place(3.0, [(1.0, speech("Good morning."))], rate=24_000)
    (seg,) = vad.speech_seconds(pcm, 24_000)[0]
    # espeak's speech starts at 1.0 s; Silero's 32 ms windows and 30 ms padding bound the error.
    assert abs(seg[0] - 1.0) < 0.07
