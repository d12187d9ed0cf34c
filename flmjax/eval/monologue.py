"""The model's monologue timed by its frames: printable text pieces per output frame -> utterances and
word chunks (Full-Duplex-Bench's `output.json` shape).

Piece k is the text that became printable at output frame k, i.e. at k * 80 ms of the reply; a "\\n"
(a `<wait>` after text) ends an utterance. A word spans from the start of the frame of its first
character to the end of the frame of its last one. Text leads speech in FLM-Audio's monologue, so these
are the times the model *wrote* the words, not the times it said them (an ASR backend gives those).
"""

from __future__ import annotations

from collections.abc import Sequence

FRAME_S = 0.08


def utterances(pieces: Sequence[str], frame_s: float = FRAME_S) -> list[dict]:
    """[{"start_s", "end_s", "text"}] per utterance (text between newlines, whitespace-trimmed)."""
    out: list[dict] = []
    text, first, last = "", -1, -1  # first = -1: no printable text yet in this utterance
    for k, piece in enumerate(list(pieces) + ["\n"]):
        for part_index, part in enumerate(piece.split("\n")):
            if part_index > 0:  # a newline: close the utterance
                if text.strip():
                    out.append({"start_s": first * frame_s, "end_s": (last + 1) * frame_s, "text": text.strip()})
                text, first, last = "", -1, -1
            if part.strip():
                first = k if first < 0 else first
                last = k
            if first >= 0:
                text += part
    return out


def word_chunks(pieces: Sequence[str], frame_s: float = FRAME_S) -> list[dict]:
    """[{"text", "timestamp": [start_s, end_s]}] per whitespace-separated word."""
    chunks, word, first, last = [], "", 0, 0
    for k, piece in enumerate(list(pieces) + [" "]):
        for ch in piece:
            if ch.isspace():
                if word:
                    chunks.append(
                        {"text": word, "timestamp": [round(first * frame_s, 3), round((last + 1) * frame_s, 3)]}
                    )
                word = ""
                continue
            if not word:
                first = k
            word, last = word + ch, k
    return chunks


def text_between(pieces: Sequence[str], start_s: float, end_s: float, frame_s: float = FRAME_S) -> str:
    """The monologue written in [start_s, end_s)."""
    return "".join(p for k, p in enumerate(pieces) if start_s <= k * frame_s < end_s)
