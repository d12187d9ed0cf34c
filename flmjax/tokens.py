"""Every special token id, the stream order and the stream delays of FLM-Audio: the one place they live.

A frame (80 ms) has 17 streams, in this order: text; speak (model) codebooks 0..7; listen (user)
codebooks 0..7. Data pipelines build samples in *raw* coordinates (frame r of every stream describes
the same 80 ms of time); the model consumes *delayed* columns, where stream k at column c holds raw
frame c - delay[k] (see `delay_streams`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

TEXT_STREAM = 0
NUM_CODEBOOKS = 8
CODEBOOK_SIZE = 2048  # Mimi codes are 0..2047
FRAME_RATE_HZ = 12.5
SAMPLE_RATE = 24_000
SAMPLES_PER_FRAME = 1920


@dataclasses.dataclass(frozen=True)
class TokenIds:
    """Special ids and stream geometry; defaults are the FLM-Audio release's."""

    text_vocab_size: int = 151668
    text_wait: int = 151665  # `<wait>`: filler of the text channel and its initial token
    text_asr: int = 151666  # `<asr>` (not in the release; natural assignment)
    text_answer: int = 151667  # `<answer>` (not in the release; natural assignment)
    bos: int = 151643  # <|endoftext|>
    eos: int = 151645  # <|im_end|>
    num_codebooks: int = NUM_CODEBOOKS
    codebook_size: int = CODEBOOK_SIZE
    audio_pad: int = 2048  # `aud_pad`: initial audio token, and what is fed for a missing input
    audio_empty: int = 2049  # `aud_emp`: empty token, and the depformer's start token
    # BayLing-Duplex's dialogue-state tokens (`[SILENCE]`, `[ASSISTANT]`, `[PAD]`, `[EPAD]`): not in the
    # release; `with_state_tokens` appends them after its vocabulary. None: the vocabulary has none.
    text_silence: int | None = None
    text_assistant: int | None = None
    text_pad: int | None = None
    text_epad: int | None = None
    # Which id fills an audio channel that a layout does not use at all. The papers call it the
    # "empty token (ID 2048)"; the release's code names 2049 `aud_emp`. Kept a field so either
    # convention can be followed.
    unused_audio_channel: int = 2048

    @property
    def state_tokens(self) -> tuple[int, int, int, int] | None:
        """([SILENCE], [ASSISTANT], [PAD], [EPAD]) when the vocabulary has them, else None."""
        ids = (self.text_silence, self.text_assistant, self.text_pad, self.text_epad)
        if any(i is None for i in ids):
            return None
        return ids  # type: ignore[return-value]

    @property
    def silent_text_ids(self) -> tuple[int, ...]:
        """Text ids that are not words: `<wait>` and the state tokens (the monologue shown skips them)."""
        return (self.text_wait, *(self.state_tokens or ()))

    def with_state_tokens(self) -> TokenIds:
        """These ids plus the four state tokens appended after the text vocabulary (which grows by 4)."""
        if self.state_tokens is not None:
            return self
        v = self.text_vocab_size
        return dataclasses.replace(
            self, text_vocab_size=v + 4, text_silence=v, text_assistant=v + 1, text_pad=v + 2, text_epad=v + 3
        )

    @property
    def audio_vocab_size(self) -> int:
        """Rows of every audio embedding table and of every depformer head (codes + pad + empty)."""
        return self.codebook_size + 2

    @property
    def num_streams(self) -> int:
        return 1 + 2 * self.num_codebooks

    @property
    def speak_streams(self) -> slice:
        return slice(1, 1 + self.num_codebooks)

    @property
    def listen_streams(self) -> slice:
        return slice(1 + self.num_codebooks, 1 + 2 * self.num_codebooks)

    @property
    def delays(self) -> np.ndarray:
        """Per-stream delay: text 0, semantic codebooks 0, acoustic codebooks 1 (speak and listen)."""
        audio = [0] + [1] * (self.num_codebooks - 1)
        return np.array([0] + audio + audio, dtype=np.int32)

    @property
    def max_delay(self) -> int:
        return int(self.delays.max())

    @property
    def initial_column(self) -> np.ndarray:
        """The column the streaming decoder starts from: text `<wait>`, every audio stream `aud_pad`."""
        col = np.full((self.num_streams,), self.audio_pad, dtype=np.int32)
        col[TEXT_STREAM] = self.text_wait
        return col

    def to_hf_token_info(self) -> dict[str, int]:
        info = {
            "text_wait_token_id": self.text_wait,
            "aud_pad_token_id": self.audio_pad,
            "aud_emp_token_id": self.audio_empty,
        }
        if self.state_tokens is not None:
            info.update(zip(STATE_TOKEN_KEYS, self.state_tokens))
        return info

    @classmethod
    def from_hf_config(cls, config: Mapping[str, Any]) -> TokenIds:
        """Read the ids a checkpoint's `config.json` carries; the rest keep the release's values."""
        info = config.get("mm_token_info") or {}
        defaults = cls()
        wait = int(info.get("text_wait_token_id", defaults.text_wait))
        vocab = int(config.get("vocab_size", defaults.text_vocab_size))
        aud_vocab = int(config.get("aud_vocab_size", defaults.audio_vocab_size))
        return cls(
            text_vocab_size=vocab,
            text_wait=wait,
            # `<asr>`/`<answer>` follow `<wait>` when the vocabulary has room for them.
            text_asr=wait + 1 if wait + 1 < vocab else defaults.text_asr,
            text_answer=wait + 2 if wait + 2 < vocab else defaults.text_answer,
            bos=int(config.get("bos_token_id", defaults.bos)),
            eos=int(config.get("eos_token_id", defaults.eos)),
            num_codebooks=int(config.get("aud_channel", defaults.num_codebooks)),
            codebook_size=aud_vocab - 2,
            audio_pad=int(info.get("aud_pad_token_id", defaults.audio_pad)),
            audio_empty=int(info.get("aud_emp_token_id", defaults.audio_empty)),
            unused_audio_channel=int(info.get("aud_pad_token_id", defaults.audio_pad)),
            **{f"text_{k.split('_')[1]}": int(info[k]) for k in STATE_TOKEN_KEYS if k in info},
        )


# How a checkpoint's `config.json` (`mm_token_info`) records the state tokens.
STATE_TOKEN_KEYS = ("text_silence_token_id", "text_assistant_token_id", "text_pad_token_id", "text_epad_token_id")

RELEASE_TOKENS = TokenIds()
# A small text vocabulary for models trained from scratch on a closed curriculum (`school`): bytes 0..255,
# then the specials, then whole words (`flmjax.data.text_tokenizer.WordTokenizer`); 1024 rows in all.
WORD_TOKENS = TokenIds(text_vocab_size=1024, text_wait=256, text_asr=257, text_answer=258, bos=259, eos=260)


def delay_streams(raw: np.ndarray, ids: TokenIds = RELEASE_TOKENS, fill: np.ndarray | None = None) -> np.ndarray:
    """Raw frames [..., T, S] -> delayed columns [..., T + max_delay, S].

    Column c of stream k holds raw frame c - delay[k]; a column before a stream's first frame holds
    `fill[k]` (the initial column by default), and so does a column after its last frame. The decoder's
    column 0 is the initial column for text and speak streams: layouts begin with a frame whose text
    and speak tokens are the initial ones (see `initial_column`).
    """
    fill = ids.initial_column if fill is None else np.asarray(fill)
    *lead, t, s = raw.shape
    delays = ids.delays
    out = np.broadcast_to(fill.astype(raw.dtype), (*lead, t + ids.max_delay, s)).copy()
    for k in range(s):
        d = int(delays[k])
        out[..., d : d + t, k] = raw[..., :, k]
    return out


def undelay_streams(delayed: np.ndarray, ids: TokenIds = RELEASE_TOKENS) -> np.ndarray:
    """Inverse of `delay_streams`: delayed columns [..., C, S] -> raw frames [..., C - max_delay, S]."""
    *lead, c, s = delayed.shape
    t = c - ids.max_delay
    delays = ids.delays
    out = np.empty((*lead, t, s), dtype=delayed.dtype)
    for k in range(s):
        d = int(delays[k])
        out[..., :, k] = delayed[..., d : d + t, k]
    return out
