"""Live conversations at the audio level: 1920 samples (80 ms at 24 kHz) in, 1920 samples and text out.

One jitted program per frame fuses Mimi's streaming encoder, the decoder step (backbone, depformer,
sampling) and Mimi's streaming decoder, for a fixed batch of independent streams. A stream's first frame
has no output frame yet (the model's speech lags the user's by one frame): it returns silence and
leaves that stream's Mimi decoder untouched, as the release decodes nothing then.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from flmjax.infer.decoder import Decoder, DecoderState, per_stream_settings
from flmjax.infer.sampling import SamplingSettings
from flmjax.infer.text import Detokenizer, TextStream
from flmjax.mimi import Mimi
from flmjax.model.pretrained import FLMAudio
from flmjax.rows import select_rows
from flmjax.tokens import TokenIds


class SessionState(NamedTuple):
    decoder: DecoderState
    mimi: Any  # Mimi's streaming state pytree (stream axis first)


class FrameResult(NamedTuple):
    pcm: np.ndarray  # [B, 1920] float32 reply audio
    text: list[str]  # per stream, the text that became printable this frame
    tokens: np.ndarray  # [B, 9] int32 the output frame (text id + 8 codes); meaningless where not valid
    valid: np.ndarray  # [B] bool False on a stream's first frame
    user_codes: np.ndarray  # [B, 8] int32 Mimi's codes of this input frame (what the model heard)


def default_tokenizer(ids: TokenIds) -> Detokenizer:
    """The tokenizer of a model's text vocabulary (the curriculum's words for `WORD_TOKENS`, else Qwen2.5)."""
    from flmjax.data.text_tokenizer import tokenizer_for

    return tokenizer_for(ids)


class Session:
    """`batch_size` conversations with `model` through the `mimi` codec, stepped together frame by frame."""

    def __init__(
        self,
        model: FLMAudio,
        mimi: Mimi,
        batch_size: int = 1,
        settings: SamplingSettings | Sequence[SamplingSettings] = SamplingSettings(),
        window: int | None = None,
        tokenizer: Detokenizer | None = None,
    ):
        if mimi.num_codebooks != model.config.num_codebooks or mimi.cardinality != model.config.tokens.codebook_size:
            raise ValueError(
                f"Mimi gives {mimi.num_codebooks} codebooks of {mimi.cardinality} codes, the model takes "
                f"{model.config.num_codebooks} of {model.config.tokens.codebook_size}"
            )
        self.model = model
        self.mimi = mimi
        self.decoder = Decoder(model, batch_size, window)
        self.batch_size = batch_size
        self.frame_size = mimi.frame_size
        self.sample_rate = mimi.sample_rate
        ids = model.config.tokens
        tokenizer = tokenizer or default_tokenizer(ids)
        self.text = [TextStream(tokenizer, ids.text_wait, ids.state_tokens or ()) for _ in range(batch_size)]
        self.settings = per_stream_settings(settings, batch_size)
        self.state = SessionState(self.decoder.init_state(self.settings), mimi.init_state(batch_size))

    def reset(self, rows: dict[int, SamplingSettings] | None = None) -> None:
        """Start new conversations on `rows` (row -> settings; default: every row with its settings):
        initial tokens, empty caches and histories, fresh Mimi streams, reseeded sampling."""
        rows = dict(enumerate(self.settings)) if rows is None else rows
        for r, s in rows.items():
            self.settings[r] = s
            self.text[r].reset()
        mask = jnp.asarray([r in rows for r in range(self.batch_size)])
        decoder = self.decoder.reset(self.state.decoder, rows)
        self.state = SessionState(decoder, self.mimi.reset_streams(self.state.mimi, mask))

    def warm_up(self) -> None:
        """Compile the frame and reset programs (one resting frame changes nothing), then reset every row."""
        self.step(np.zeros((self.batch_size, self.frame_size), np.float32), np.zeros(self.batch_size, bool))
        self.reset()

    def step(self, pcm: np.ndarray, active: np.ndarray | None = None) -> FrameResult:
        """pcm float [B, 1920] (or [1920] for a batch of one) at 24 kHz -> the reply frame of every stream.

        Streams where `active` [B] is False (default: all active) rest: their state stays as it was and
        their reply is silence (valid False)."""
        pcm = np.asarray(pcm, np.float32)
        if pcm.ndim == 1 and self.batch_size == 1:
            pcm = pcm[None]
        if pcm.shape != (self.batch_size, self.frame_size):
            raise ValueError(
                f"Session.step takes [{self.batch_size}, {self.frame_size}] samples, got {list(pcm.shape)}"
            )
        active = np.ones(self.batch_size, bool) if active is None else np.asarray(active, bool)
        self.state, audio, frame, valid, heard = self._frame(
            self.model.params, self.mimi.params, self.state, pcm, active
        )
        audio, frame, valid = np.asarray(audio), np.asarray(frame), np.asarray(valid)
        text = [stream.push(int(f[0])) if v else "" for stream, f, v in zip(self.text, frame, valid)]
        return FrameResult(audio, text, frame, valid, np.asarray(heard))

    @functools.cached_property
    def _frame(self):
        return jax.jit(self.frame_step, donate_argnums=(2,))

    def frame_step(self, params: dict, mimi_params: dict, state: SessionState, pcm: jax.Array, active: jax.Array):
        """Pure: (state, pcm [B, 1920], active [B]) -> (state, reply pcm [B, 1920], output frame [B, 9], valid [B],
        user codes [B, 8])."""

        encoded, codes = self.mimi.encode_step(mimi_params, state.mimi, pcm[:, None, :])
        decoder, out = self.decoder.frame_step(params, state.decoder, codes[:, :, 0], active)
        decoded, audio = self.mimi.decode_step(mimi_params, encoded, out.frame[:, 1:, None])
        # Resting streams keep their encoder; streams without an output frame keep their decoder.
        mimi_state = {"encode": select_rows(active, encoded["encode"], state.mimi["encode"]),
                      "decode": select_rows(out.valid, decoded["decode"], state.mimi["decode"])}  # fmt: skip
        audio = jnp.where(out.valid[:, None], audio[:, 0], 0.0)
        return SessionState(decoder, mimi_state), audio, out.frame, out.valid, codes[:, :, 0]
