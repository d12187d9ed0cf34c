"""Silero VAD without torch: the ONNX model the `silero-vad` wheel ships, run through onnxruntime.

The model file comes from the `silero-vad` wheel (MIT), installed without its torch dependency.
The model is a streaming network: each call takes 512 new samples at 16 kHz preceded by the last 64
samples of the previous call (zeros at first), the recurrent state [2, B, 128] and the rate, and returns
the speech probability of those 512 samples and the next state. Channels are rows of one batch.

`speech_segments` turns the probabilities into segments with the rules of silero's
`get_speech_timestamps` (default settings, no maximum segment length): speech starts at the first window
with p >= threshold, ends at the first window with p < threshold - 0.15 that begins a silence of at least
`min_silence_ms`; segments of `min_speech_ms` or less are dropped; each side is padded by `speech_pad_ms`
(halfway when two segments are closer than twice that).
"""

from __future__ import annotations

import dataclasses
import functools
from importlib import metadata
from pathlib import Path

import numpy as np

from flmjax import audio
from flmjax.eval import EvalError

SAMPLE_RATE = 16_000
WINDOW = 512  # samples per model call at 16 kHz (32 ms)
CONTEXT = 64  # samples of the previous call prepended to each window
STATE_SHAPE = (2, 128)  # the recurrent state per row: [2, B, 128]


@dataclasses.dataclass(frozen=True)
class VadOptions:
    """silero's `get_speech_timestamps` defaults."""

    threshold: float = 0.5
    min_speech_ms: float = 250.0
    min_silence_ms: float = 100.0
    speech_pad_ms: float = 30.0

    @property
    def neg_threshold(self) -> float:
        return max(self.threshold - 0.15, 0.01)


INSTALL = "pip install --no-deps silero-vad==6.2.3"  # its torch dependency serves only its own torch API


def model_path() -> str:
    """The ONNX file inside the installed `silero-vad` wheel, found from the wheel's metadata: importing
    the package would import torch, which evaluation does not need."""
    try:
        path = Path(str(metadata.distribution("silero-vad").locate_file("silero_vad/data/silero_vad.onnx")))
    except metadata.PackageNotFoundError:
        raise EvalError(f"Silero VAD is not installed: {INSTALL}") from None
    if not path.is_file():
        raise EvalError(f"{path}: silero-vad's ONNX model is missing ({INSTALL})")
    return str(path)


@functools.cache
def _session():
    import onnxruntime

    opts = onnxruntime.SessionOptions()
    opts.inter_op_num_threads = 1
    opts.intra_op_num_threads = 1
    return onnxruntime.InferenceSession(model_path(), sess_options=opts, providers=["CPUExecutionProvider"])


def probabilities(pcm: np.ndarray) -> np.ndarray:
    """float [C, N] (or [N]) at 16 kHz -> speech probability of each 512-sample window, float32 [C, ceil(N/512)].

    The last window is zero-padded, as silero does."""
    pcm = np.atleast_2d(np.asarray(pcm, np.float32))
    channels, n = pcm.shape
    windows = -(-n // WINDOW)
    padded = np.zeros((channels, CONTEXT + windows * WINDOW), np.float32)
    padded[:, CONTEXT : CONTEXT + n] = pcm
    session = _session()
    state = np.zeros((STATE_SHAPE[0], channels, STATE_SHAPE[1]), np.float32)
    rate = np.array(SAMPLE_RATE, np.int64)
    out = np.empty((channels, windows), np.float32)
    for w in range(windows):
        chunk = padded[:, w * WINDOW : w * WINDOW + CONTEXT + WINDOW]
        prob, state = session.run(None, {"input": chunk, "state": state, "sr": rate})
        out[:, w] = prob[:, 0]
    return out


def speech_segments(probs: np.ndarray, num_samples: int, options: VadOptions = VadOptions()) -> list[tuple[int, int]]:
    """One channel's window probabilities -> speech segments [start, end) in 16 kHz samples."""
    sr = SAMPLE_RATE / 1000
    min_speech, min_silence, pad = options.min_speech_ms * sr, options.min_silence_ms * sr, options.speech_pad_ms * sr
    raw: list[list[float]] = []
    start, silence_from = None, None  # the open segment's start; where its current silence began
    for w, p in enumerate(np.asarray(probs, np.float64)):
        here = w * WINDOW
        if p >= options.threshold:
            silence_from = None
            if start is None:
                start = here
            continue
        if start is not None and p < options.neg_threshold:
            silence_from = here if silence_from is None else silence_from
            if here - silence_from >= min_silence:
                if silence_from - start > min_speech:
                    raw.append([start, silence_from])
                start, silence_from = None, None
    if start is not None and num_samples - start > min_speech:
        raw.append([start, num_samples])
    # Padding: outward by `pad`, or halfway into a silence shorter than twice that.
    for i, seg in enumerate(raw):
        if i == 0:
            seg[0] = int(max(0, seg[0] - pad))
        if i + 1 < len(raw):
            nxt = raw[i + 1]
            gap = nxt[0] - seg[1]
            if gap < 2 * pad:
                seg[1] += gap // 2
                nxt[0] = int(max(0, nxt[0] - gap // 2))
            else:
                seg[1] = int(min(num_samples, seg[1] + pad))
                nxt[0] = int(max(0, nxt[0] - pad))
        else:
            seg[1] = int(min(num_samples, seg[1] + pad))
    return [(int(s), int(e)) for s, e in raw]


def to_16k(pcm: np.ndarray, sample_rate: int) -> np.ndarray:
    """float [C, N] at any rate -> [C, M] at 16 kHz (Silero's rate)."""
    return audio.resample(np.atleast_2d(pcm), sample_rate, SAMPLE_RATE)


def speech_seconds(
    pcm: np.ndarray, sample_rate: int, options: VadOptions = VadOptions()
) -> list[list[tuple[float, float]]]:
    """float [C, N] (or [N]) at any rate -> per channel, speech segments (start_s, end_s)."""
    pcm16 = to_16k(pcm, sample_rate)
    if pcm16.shape[-1] == 0:
        raise EvalError("voice activity of an empty signal")
    probs = probabilities(pcm16)
    return [
        [(s / SAMPLE_RATE, e / SAMPLE_RATE) for s, e in speech_segments(p, pcm16.shape[-1], options)] for p in probs
    ]
