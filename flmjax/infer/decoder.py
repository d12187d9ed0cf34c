"""The streaming decoder: spec section 3's step loop, one jitted program per 80 ms frame.

One call of `Decoder.step` runs, for every stream of a fixed batch, with no host round trip: write the
user's Mimi codes into the token ring, read column t, one backbone step on the fixed-size ring KV cache,
sample the text token, 8 depformer positions (a `lax.scan`) each sampling one speak code, write column
t+1 and return the complete output frame (text and semantic code of column t, acoustic codes of column
t+1: the release's return value, which lags the input by one frame).

Streams are independent rows: each has its own frame offset, KV rows, token ring, sampling settings,
repetition history and PRNG key, so one stream can be reset (a new conversation) while the others go on,
without recompiling and without changing their results.

Long conversations: the backbone cache is a ring of `window` columns (default max_position_embeddings)
holding the last `window` frames, so memory and compiled shapes never change however long a
conversation runs; past `window` frames attention slides. RoPE positions keep growing (the frame index,
int32) instead of wrapping or being re-based: RoPE makes attention depend only on the distance between a
query and a key, which the sliding window keeps below `window` (distances the model was trained on),
and keys are rotated once, when written, so nothing in the cache ever has to be rewritten. The cost is
fp32 rounding of the angle position * inv_freq, about position * 6e-8 rad for the fastest frequency:
5e-4 rad at the 8192-frame (11 min) context, 4e-3 rad after 1.5 hours, the size of bf16 rounding of
the keys themselves. Wrapping positions instead would give keys near the wrap point distances the model
never saw; re-basing would rotate the whole cache every so often (a stall).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from flmjax.config import ModelConfig
from flmjax.infer.sampling import (
    PENALIZED_CODEBOOKS,
    SamplingSettings,
    StreamSampling,
    apply_repetition_penalty,
    mask_ids_from,
    sample,
    stream_sampling,
)
from flmjax.model.backbone import KVCache, init_kv_cache
from flmjax.model.depformer import init_depformer_cache
from flmjax.model.flm_audio import FLMAudioLM
from flmjax.model.pretrained import FLMAudio
from flmjax.rows import select_rows

DEFAULT_HISTORY = 128  # longest repetition-penalty window a stream may ask for (the release's clients allow 100)


class DecoderState(NamedTuple):
    """Everything a batch of streams carries from one frame to the next (every leaf has the batch axis)."""

    tokens: jax.Array  # [B, 17, ring] int32: delayed column c sits in slot c % ring
    offset: jax.Array  # [B] int32: the frame index t, also the RoPE position of column t
    kv: KVCache  # backbone ring cache (layers first; pos [B, window])
    history: jax.Array  # [B, H, 9] int32: text id and 8 speak codes sampled at frame history_frame
    history_frame: jax.Array  # [B, H] int32: frame of each history entry, -1 = empty
    keys: jax.Array  # [B, 2] uint32: one PRNG key per stream
    text_sampling: StreamSampling
    audio_sampling: StreamSampling


class StepOutput(NamedTuple):
    frame: jax.Array  # [B, 9] int32: text id + 8 codes of the output frame (as the release returns it)
    valid: jax.Array  # [B] bool: False on a stream's first frame (the release returns nothing then)
    column: jax.Array  # [B, 9] int32: text + 8 speak codes sampled now, i.e. delayed column t+1


def per_stream_settings(
    settings: SamplingSettings | Sequence[SamplingSettings], batch_size: int
) -> list[SamplingSettings]:
    """One settings object for every stream, or exactly one per stream."""
    if isinstance(settings, SamplingSettings):
        return [settings] * batch_size
    if len(settings) != batch_size:
        raise ValueError(f"{len(settings)} settings for a batch of {batch_size}")
    return list(settings)


def _ring_size(config: ModelConfig) -> int:
    # Step t touches columns t (read, user semantic code) and t+1 (user acoustic codes, the sampled
    # tokens, the output frame's acoustic codes): max_delay + 1 slots suffice.
    return config.tokens.max_delay + 1


class Decoder:
    """Streaming decoding of `batch_size` independent streams with `model`.

    `init_state`, `reset` and `step` are jitted once (shapes are fixed by batch_size, window and
    history); `frame_step` is the pure step for callers that fuse it into a larger program (sessions).
    """

    def __init__(self, model: FLMAudio, batch_size: int, window: int | None = None, history: int = DEFAULT_HISTORY):
        self.model = model
        self.config = model.config
        self.batch_size = batch_size
        self.window = window or self.config.max_position_embeddings
        self.history = history
        if batch_size < 1 or self.window < 1 or history < 1:
            raise ValueError("batch_size, window and history must be >= 1")

    # --- state -------------------------------------------------------------------------------------
    def init_state(self, settings: SamplingSettings | Sequence[SamplingSettings] = SamplingSettings()) -> DecoderState:
        """A batch of fresh streams (seeded from each stream's settings)."""
        settings = per_stream_settings(settings, self.batch_size)
        b, ids = self.batch_size, self.config.tokens
        sampling = (stream_sampling(settings, "text"), stream_sampling(settings, "audio"))
        state = DecoderState(
            tokens=jnp.zeros((b, ids.num_streams, _ring_size(self.config)), jnp.int32),
            offset=jnp.zeros((b,), jnp.int32),
            kv=init_kv_cache(self.config, b, self.window),
            history=jnp.zeros((b, self.history, 1 + ids.num_codebooks), jnp.int32),
            history_frame=jnp.full((b, self.history), -1, jnp.int32),
            keys=jnp.zeros((b, 2), jnp.uint32),
            text_sampling=jax.tree_util.tree_map(jnp.asarray, sampling[0]),
            audio_sampling=jax.tree_util.tree_map(jnp.asarray, sampling[1]),
        )
        return self.reset(state, {row: s for row, s in enumerate(settings)})

    def reset(self, state: DecoderState, rows: dict[int, SamplingSettings]) -> DecoderState:
        """Start a new conversation on each stream in `rows` (with its settings); other rows are untouched."""
        if any(not 0 <= r < self.batch_size for r in rows):
            raise ValueError(f"rows {sorted(rows)} outside the batch of {self.batch_size}")
        settings = [rows.get(r, SamplingSettings()) for r in range(self.batch_size)]
        for s in settings:
            s.validate(self.history)
        mask = np.array([r in rows for r in range(self.batch_size)])
        seeds = np.array([s.seed for s in settings], np.uint32)
        return self._reset(state, mask, stream_sampling(settings, "text"), stream_sampling(settings, "audio"), seeds)

    @functools.cached_property
    def _reset(self):
        initial = jnp.asarray(self.config.tokens.initial_column)

        def reset(state, mask, text_sampling, audio_sampling, seeds):
            ring = jnp.broadcast_to(initial[None, :, None], state.tokens.shape)
            return DecoderState(
                tokens=select_rows(mask, ring, state.tokens),
                offset=select_rows(mask, 0, state.offset),
                kv=state.kv._replace(
                    pos=select_rows(mask, -1, state.kv.pos)
                ),  # empty slots: the old keys are never attended
                history=state.history,
                history_frame=select_rows(mask, -1, state.history_frame),
                keys=select_rows(mask, jax.vmap(jax.random.PRNGKey)(seeds), state.keys),
                text_sampling=select_rows(mask, text_sampling, state.text_sampling),
                audio_sampling=select_rows(mask, audio_sampling, state.audio_sampling),
            )

        return jax.jit(reset, donate_argnums=(0,))

    # --- the frame ---------------------------------------------------------------------------------
    def step(
        self, state: DecoderState, user_codes: ArrayLike, active: ArrayLike | None = None
    ) -> tuple[DecoderState, StepOutput]:
        """user_codes int32 [B, 8] (the user's Mimi codes of this frame) -> (state, output). Donates state.

        Streams where `active` [B] is False rest: they keep their state (their output is not valid)."""
        active = np.ones(self.batch_size, bool) if active is None else active
        return self._step(self.model.params, state, user_codes, active)

    @functools.cached_property
    def _step(self):
        return jax.jit(self.frame_step, donate_argnums=(1,))

    def frame_step(
        self, params: dict, state: DecoderState, user_codes: jax.Array, active: jax.Array
    ) -> tuple[DecoderState, StepOutput]:
        """The pure step (traceable): spec section 3, steps 1-5, for every stream at its own offset;
        streams where active [B] is False keep their state."""
        cfg, ids = self.config, self.config.tokens
        module = self.model.module
        n = ids.num_codebooks
        b = state.offset.shape[0]
        rows = jnp.arange(b)
        delays = jnp.asarray(ids.delays)
        ring = state.tokens.shape[-1]
        t = state.offset

        # 1. listen codes: codebook c goes to column t + delay (semantic t, acoustic t+1).
        listen = jnp.arange(1 + n, 1 + 2 * n)
        tokens = state.tokens.at[rows[:, None], listen[None, :], (t[:, None] + delays[listen]) % ring].set(
            user_codes.astype(jnp.int32)
        )
        # 2. read column t; before a stream was ever written it holds the initial token (text and speak
        # at column 0, listen streams before their delay).
        column = tokens[rows, :, t % ring]
        streams = jnp.arange(ids.num_streams)
        is_initial = jnp.where(streams <= n, t[:, None] == 0, t[:, None] < delays)
        column = jnp.where(is_initial, jnp.asarray(ids.initial_column), column)
        # A resting stream still computes (the batch is one program) but its column goes in at position
        # t - window: the ring slot its next real frame overwrites, at a position no query attends.
        positions = jnp.where(active, t, t - state.kv.window)[:, None]
        # flax types apply's result as "output or (output, mutated variables)"; with no `mutable` it is the output.
        text_logits, hidden, kv = module.apply(  # type: ignore[misc]
            {"params": params}, column[:, None], positions, state.kv, method=FLMAudioLM.backbone_step
        )

        # 3. sample text, then the 8 codes, each with the repetition penalty over its recent history.
        keys = jax.vmap(lambda k: jax.random.split(k, n + 2))(state.keys)  # [B, n+2, 2] raw uint32 keys
        in_text_window, in_audio_window = (
            (state.history_frame >= 0) & (state.history_frame >= t[:, None] - s.window[:, None])
            for s in (state.text_sampling, state.audio_sampling)
        )
        ts = state.text_sampling
        logits = apply_repetition_penalty(text_logits[:, 0], state.history[:, :, 0], in_text_window, ts.penalty)
        text = sample(logits, keys[:, 1], ts)

        audio = state.audio_sampling
        h = hidden[:, 0]

        def codebook(carry, c):
            prev, cache = carry
            logits, cache = module.apply({"params": params}, h, prev, c, cache, method=FLMAudioLM.depformer_step)
            logits = mask_ids_from(logits, ids.codebook_size)
            penalty = jnp.where(c < PENALIZED_CODEBOOKS, audio.penalty, 1.0)
            seen = jnp.take(state.history, 1 + c, axis=2)
            logits = apply_repetition_penalty(logits, seen, in_audio_window, penalty)
            code = sample(logits, jnp.take(keys, 2 + c, axis=1), audio)
            return (code, cache), code

        start = (jnp.full((b,), ids.audio_empty, jnp.int32), init_depformer_cache(cfg, b))
        _, codes = jax.lax.scan(codebook, start, jnp.arange(n))
        sampled = jnp.concatenate([text[:, None], codes.T], axis=1)  # [B, 9]

        # 4. text and speak codes are column t+1.
        speak = jnp.arange(0, 1 + n)
        tokens = tokens.at[rows[:, None], speak[None, :], ((t + 1) % ring)[:, None]].set(sampled)
        # 5. the output frame: text and semantic from column t, acoustic from column t+1.
        frame = tokens[rows[:, None], speak[None, :], (t[:, None] + delays[: 1 + n]) % ring]

        slot = t % state.history.shape[1]

        # resting streams keep their old state
        new_state = DecoderState(
            tokens=select_rows(active, tokens, state.tokens),
            offset=select_rows(active, t + 1, t),
            kv=kv,
            history=select_rows(active, state.history.at[rows, slot].set(sampled), state.history),
            history_frame=select_rows(active, state.history_frame.at[rows, slot].set(t), state.history_frame),
            keys=select_rows(active, keys[:, 0], state.keys),
            text_sampling=state.text_sampling,
            audio_sampling=state.audio_sampling,
        )
        return new_state, StepOutput(frame=frame, valid=active & (t >= ids.max_delay), column=sampled)
