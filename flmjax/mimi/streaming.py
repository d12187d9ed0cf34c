"""`MimiStream`: frame-by-frame encode/decode of a batch of independent streams, state kept inside."""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np

if TYPE_CHECKING:
    from flmjax.mimi.codec import Mimi


class MimiStream:
    """Feed whole frames: `encode([B, 1, k * 1920]) -> [B, n_q, k]`, `decode([B, n_q, k]) -> [B, 1, k * 1920]`.

    Encode and decode keep separate state, so a stream may only encode, only decode, or both. Each call
    is one jitted program (compiled once per (batch, k)) that updates its half of the state in place.
    """

    def __init__(self, mimi: Mimi, batch_size: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.mimi = mimi
        self.batch_size = batch_size
        self.state = mimi.init_state(batch_size)

    def encode(self, frame: jax.Array | np.ndarray) -> jax.Array:
        frame = self.mimi.check_pcm(frame, "MimiStream.encode")
        if frame.shape[0] != self.batch_size:
            raise ValueError(
                f"MimiStream.encode: this stream has {self.batch_size} rows, got a frame of shape {tuple(frame.shape)}"
            )
        self.state["encode"], codes = self.mimi.encode_frames(self.mimi.params, self.state["encode"], frame)
        return codes

    def decode(self, codes: jax.Array | np.ndarray) -> jax.Array:
        codes = self.mimi.check_codes(codes, "MimiStream.decode")
        if codes.shape[0] != self.batch_size or codes.shape[-1] == 0:
            raise ValueError(
                f"MimiStream.decode expects codes [{self.batch_size}, {self.mimi.n_q}, k >= 1], "
                f"got shape {tuple(codes.shape)}"
            )
        self.state["decode"], pcm = self.mimi.decode_frames(self.mimi.params, self.state["decode"], codes)
        return pcm

    def reset(self, mask: jax.Array | np.ndarray | None = None) -> None:
        """Restart the streams where mask [B] is True (all of them without a mask), e.g. a new session."""
        mask = jnp.ones(self.batch_size, bool) if mask is None else jnp.asarray(mask, bool)
        if mask.shape != (self.batch_size,):
            raise ValueError(f"reset mask must have shape ({self.batch_size},), got {tuple(mask.shape)}")
        self.state = self.mimi.reset_streams(self.state, mask)
