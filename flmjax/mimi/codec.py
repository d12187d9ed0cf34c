"""`Mimi`: the codec's public face (load/save weights, batch encode/decode, streams, pure step functions)."""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flmjax.mimi import weights
from flmjax.mimi.config import MimiConfig
from flmjax.mimi.model import MimiModel, StreamState
from flmjax.mimi.streaming import MimiStream
from flmjax.rows import select_rows

Params = dict[str, Any]


class Mimi:
    """kyutai's Mimi in JAX: 24 kHz mono audio <-> `n_q` codes per 80 ms frame (12.5 Hz).

    Batch: `encode(pcm [B, 1, N]) -> codes [B, n_q, ceil(N / 1920)]`, `decode(codes) -> pcm [B, 1, 1920 F]`.
    Streaming: `streaming(B)` gives a stream holding its own state. For fusing Mimi into another jitted
    program, `init_state`, `encode_step`, `decode_step` and `reset_state` are pure functions of
    (params, state, inputs); the state is a pytree whose leaves all have the stream axis first.
    Jitted, state-donating versions: `encode_frames(params, state["encode"], pcm)`,
    `decode_frames(params, state["decode"], codes)` and `reset_streams(state, mask)`.
    """

    def __init__(self, params: Params, n_q: int = 8, config: MimiConfig = MimiConfig()) -> None:
        """`params` as built by `from_pretrained` / `random` for the same `n_q` (its codebooks)."""
        if not config.n_q_semantic <= n_q <= config.total_codebooks:
            raise ValueError(f"n_q must be between {config.n_q_semantic} and {config.total_codebooks}, got {n_q}")
        weights.check_params(params, config, n_q)
        self.params = params
        self.n_q = n_q
        self.config = config
        self.module = MimiModel(config, n_q)
        self._encode = jax.jit(self._method(MimiModel.encode))
        self._decode = jax.jit(self._method(MimiModel.decode))
        # Per-frame steps on one half of the state, which they update in place (donated).
        self.encode_frames = jax.jit(self._method(MimiModel.encode_frames), donate_argnums=1)
        self.decode_frames = jax.jit(self._method(MimiModel.decode_frames), donate_argnums=1)
        self.reset_streams = jax.jit(self.reset_state, donate_argnums=0)

    def _method(self, method: Any) -> Any:
        return lambda params, *args: self.module.apply({"params": params}, *args, method=method)

    # --- construction and weights ----------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, n_q: int = 8, config: MimiConfig = MimiConfig()) -> Mimi:
        """Load a kyutai Mimi safetensors file (`tokenizer-e351c8d8-checkpoint125.safetensors`)."""
        return cls(weights.load_kyutai(path, config, n_q), n_q, config)

    @classmethod
    def random(cls, seed: int = 0, n_q: int = 8, config: MimiConfig = MimiConfig()) -> Mimi:
        """Random weights (codebooks included, so codes vary with the audio): for tests and demos."""
        return cls(weights.random_params(config, n_q, seed), n_q, config)

    def save_pretrained(self, path: str | os.PathLike) -> None:
        """Write the weights as a kyutai-named safetensors file (with the n_q codebooks in use)."""
        weights.save_kyutai(self.params, path, self.config, self.n_q)

    # --- numbers ---------------------------------------------------------------------------------------

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def frame_rate(self) -> float:
        return self.config.frame_rate

    @property
    def frame_size(self) -> int:
        return self.config.frame_size

    @property
    def num_codebooks(self) -> int:
        return self.n_q

    @property
    def cardinality(self) -> int:
        return self.config.codebook_size

    # --- batch -----------------------------------------------------------------------------------------

    def encode(self, pcm: jax.Array | np.ndarray, sample_rate: int | None = None) -> jax.Array:
        """float pcm [B, 1, N] at 24 kHz -> int32 codes [B, n_q, ceil(N / frame_size)] (right zero-padded)."""
        if sample_rate is not None and sample_rate != self.sample_rate:
            raise ValueError(
                f"Mimi takes {self.sample_rate} Hz audio, got {sample_rate} Hz: resample first "
                "(flmjax.audio.prepare_for_mimi)"
            )
        pcm = self.check_pcm(pcm, "Mimi.encode")
        if pcm.shape[-1] == 0:
            raise ValueError("Mimi.encode got an empty signal (0 samples)")
        pad = -pcm.shape[-1] % self.frame_size
        return self._encode(self.params, jnp.pad(pcm, ((0, 0), (0, 0), (0, pad))))

    def decode(self, codes: jax.Array | np.ndarray) -> jax.Array:
        """int codes [B, n_q, F] -> float32 pcm [B, 1, F * frame_size]."""
        return self._decode(self.params, self.check_codes(codes, "Mimi.decode"))

    # --- streaming -------------------------------------------------------------------------------------

    def streaming(self, batch_size: int = 1) -> MimiStream:
        """A stream of `batch_size` independent conversations, fed whole 80 ms frames."""
        return MimiStream(self, batch_size)

    def init_state(self, batch_size: int) -> StreamState:
        """Fresh streaming state for `batch_size` streams: {"encode": ..., "decode": ...}."""
        return self.module.apply({}, batch_size, method=MimiModel.init_state)  # type: ignore[return-value]  # flax: apply without `mutable` returns the output alone

    def encode_step(self, params: Params, state: StreamState, frame: jax.Array) -> tuple[StreamState, jax.Array]:
        """Pure: frame [B, 1, k * frame_size] -> (state, codes [B, n_q, k]); only state["encode"] changes."""
        encode, codes = self.module.apply({"params": params}, state["encode"], frame, method=MimiModel.encode_frames)
        return {**state, "encode": encode}, codes  # type: ignore[return-value]  # flax: apply without `mutable` returns the output alone

    def decode_step(self, params: Params, state: StreamState, codes: jax.Array) -> tuple[StreamState, jax.Array]:
        """Pure: codes [B, n_q, k] -> (state, pcm [B, 1, k * frame_size]); only state["decode"] changes."""
        decode, pcm = self.module.apply({"params": params}, state["decode"], codes, method=MimiModel.decode_frames)
        return {**state, "decode": decode}, pcm  # type: ignore[return-value]  # flax: apply without `mutable` returns the output alone

    def reset_state(self, state: StreamState, mask: jax.Array) -> StreamState:
        """Pure: streams where mask [B] (bool) is set start afresh; the others are untouched."""
        fresh = self.init_state(mask.shape[0])
        return select_rows(mask, fresh, state)

    # --- input checks ----------------------------------------------------------------------------------

    def check_pcm(self, pcm: jax.Array | np.ndarray, who: str) -> jax.Array:
        if pcm.ndim != 3 or pcm.shape[1] != 1:
            raise ValueError(f"{who} expects mono pcm shaped [batch, 1, samples], got shape {tuple(pcm.shape)}")
        if not jnp.issubdtype(pcm.dtype, jnp.floating):
            raise ValueError(f"{who} expects float pcm in [-1, 1], got dtype {pcm.dtype}")
        return jnp.asarray(pcm, jnp.float32)

    def check_codes(self, codes: jax.Array | np.ndarray, who: str) -> jax.Array:
        if codes.ndim != 3 or codes.shape[1] != self.n_q:
            raise ValueError(f"{who} expects codes shaped [batch, {self.n_q}, frames], got shape {tuple(codes.shape)}")
        if not jnp.issubdtype(codes.dtype, jnp.integer):
            raise ValueError(f"{who} expects integer codes, got dtype {codes.dtype}")
        if codes.size and not 0 <= int(codes.min()) <= int(codes.max()) < self.cardinality:
            raise ValueError(
                f"{who}: codes must lie in [0, {self.cardinality}), got [{int(codes.min())}, {int(codes.max())}]"
            )
        return jnp.asarray(codes, jnp.int32)
