"""Full-Duplex-Bench inference with an flmjax model: every sample folder's `input.wav` played to the model
frame by frame (folders batched through one Session), writing a time-aligned `output.wav` (the input's
length and rate: reply frame k is what the model said while hearing input frame k, the first frame
silent) and `output.json` (`{"text", "chunks": [{"text", "timestamp": [s, e]}]}`) so that the benchmark's
scripts, and `evaluate.py fdb`, run on it unchanged.

The words come from the model's own monologue timed by its frames, or from an ASR backend of the reply
audio. In a folder with `interrupt.json` (user_interruption) only the words after the interruption's
end are kept, as the benchmark's ASR step transcribes only the audio after it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from flmjax.eval import fdb, monologue
from flmjax.eval.asr import Transcriber
from flmjax.eval.conversation import stream
from flmjax.infer.offline import read_user_audio, write_reply_audio
from flmjax.infer.sampling import SamplingSettings
from flmjax.infer.session import Session


def after(chunks: Sequence[dict], offset_s: float) -> list[dict]:
    """The words ending after `offset_s`, starting no earlier than it."""
    return [
        {"text": c["text"], "timestamp": [max(c["timestamp"][0], offset_s), c["timestamp"][1]]}
        for c in chunks
        if c["timestamp"][1] > offset_s
    ]


def transcript(
    pieces: Sequence[str], reply, sample_rate: int, asr: Transcriber | None, offset_s: float, frame_s: float
) -> dict:
    """output.json of one reply: the monologue's words (or the ASR's), those after `offset_s` only."""
    if asr is None:
        chunks = after(monologue.word_chunks(pieces, frame_s), offset_s)
    else:
        skip = int(offset_s * sample_rate)
        heard = asr.transcribe(reply[skip:], sample_rate)["chunks"] if skip < len(reply) else []
        chunks = [{"text": c["text"], "timestamp": [t + offset_s for t in c["timestamp"]]} for c in heard]
    return {"text": " ".join(c["text"] for c in chunks), "chunks": chunks}


def infer_directory(
    session: Session,
    root: str | Path,
    settings: SamplingSettings,
    asr: Transcriber | None = None,
    progress: str | None = None,
) -> list[Path]:
    """Write output.wav and output.json into every folder of `root` holding an input.wav."""
    folders = fdb.sample_dirs(root, "input.wav")
    frame_s = session.frame_size / session.sample_rate
    for first in range(0, len(folders), session.batch_size):
        batch = folders[first : first + session.batch_size]
        inputs = [read_user_audio(str(d / "input.wav")) for d in batch]
        streamed = stream(session, [u.pcm for u in inputs], [settings] * len(batch), progress)
        for d, user, s in zip(batch, inputs, streamed):
            write_reply_audio(str(d / "output.wav"), s.reply, user)
            offset = fdb.annotation_time(d / "interrupt.json", 1) if (d / "interrupt.json").is_file() else 0.0
            out = transcript(s.pieces, s.reply, session.sample_rate, asr, offset, frame_s)
            (d / "output.json").write_text(json.dumps(out, indent=2, ensure_ascii=False), encoding="utf-8")
    return folders
