"""Word-timestamped ASR of the model's speech, behind one interface: Whisper through `transformers` from
local weights (`whisper:/path/to/whisper-small`), or a fake for tests (`fake`: one word per Silero speech
segment, so it follows the audio). Nothing downloads: a path without Whisper weights is a one-line error.

A backend maps (float mono pcm, sample rate) to Full-Duplex-Bench's `output.json` shape:
{"text", "chunks": [{"text", "timestamp": [start_s, end_s]}]}.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np

from flmjax.eval import EvalError
from flmjax.eval import vad as silero

SPECS = "whisper:/path/to/whisper-weights or fake"


class Transcriber(Protocol):
    def transcribe(self, pcm: np.ndarray, sample_rate: int) -> dict: ...


class FakeASR:
    """Each Silero speech segment becomes the word "speech" spanning it."""

    def transcribe(self, pcm: np.ndarray, sample_rate: int) -> dict:
        segments = silero.speech_seconds(pcm, sample_rate)[0]
        chunks: list[dict] = [{"text": "speech", "timestamp": [round(s, 3), round(e, 3)]} for s, e in segments]
        return {"text": " ".join(c["text"] for c in chunks), "chunks": chunks}


class WhisperASR:
    """transformers' ASR pipeline with word timestamps, on local Whisper weights only."""

    def __init__(self, path: str):
        if not (Path(path) / "config.json").is_file():
            raise EvalError(f"--asr whisper:{path}: no Whisper weights there (config.json missing); give {SPECS}")
        from transformers import pipeline

        self.pipe = pipeline(
            "automatic-speech-recognition", model=path, device="cpu", model_kwargs={"local_files_only": True}
        )

    def transcribe(self, pcm: np.ndarray, sample_rate: int) -> dict:
        pcm16 = silero.to_16k(pcm, sample_rate)[0]
        out: Any = self.pipe(
            {"raw": pcm16, "sampling_rate": silero.SAMPLE_RATE}, return_timestamps="word", chunk_length_s=30
        )
        chunks = [
            {"text": c["text"].strip(), "timestamp": [c["timestamp"][0], c["timestamp"][1]]} for c in out["chunks"]
        ]
        return {"text": out["text"].strip(), "chunks": chunks}


def backend(spec: str | None) -> Transcriber | None:
    """`--asr` value -> a transcriber (None: use the model's own monologue)."""
    if not spec:
        return None
    if spec == "fake":
        return FakeASR()
    if spec.startswith("whisper:") and len(spec) > len("whisper:"):
        return WhisperASR(spec[len("whisper:") :])
    raise EvalError(f"--asr {spec!r}: unknown backend; give {SPECS}")
