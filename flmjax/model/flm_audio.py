"""The whole network as one linen module with three entry points.

- `__call__(tokens)`: teacher-forced forward for training.
- `backbone_step(tokens, positions, cache)`: new columns through the backbone with the ring KV cache.
- `depformer_step(hidden, prev_code, position, cache)`: one depformer position with its small cache.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from flmjax.config import ModelConfig
from flmjax.model.backbone import (
    Backbone,
    KVCache,
    StreamEmbedding,
    causal_mask,
    make_text_head,
    window_mask,
    write_cache,
)
from flmjax.model.depformer import Depformer, DepformerCache
from flmjax.model.layers import constrain


class FLMAudioLM(nn.Module):
    config: ModelConfig

    def setup(self) -> None:
        self.embed_tokens = StreamEmbedding(self.config)
        self.backbone = Backbone(self.config)
        self.lm_head = make_text_head(self, self.config)
        self.depformer = Depformer(self.config)

    def text_logits(self, hidden: jax.Array) -> jax.Array:
        dtype = jnp.dtype(self.config.numerics.dtype)
        logits = hidden.astype(dtype) @ self.lm_head.astype(dtype)
        if self.config.use_mup:
            logits = logits * jnp.asarray(self.config.text_logit_scale, dtype)
        return constrain(logits, ("activation_batch", "activation_length", "activation_vocab"))

    def __call__(self, tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
        """tokens int32 [B, T+1, 17] delayed columns -> text logits [B, T, V], audio logits [B, T, 8, A].

        Column t's text logits predict the text of column t+1; its audio logits are the depformer on
        column t's hidden state, teacher-forced with the speak codes of column t+1.
        """
        hidden, audio = self.features(tokens)
        return self.text_logits(hidden), audio

    def features(self, tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
        """As `__call__`, with the backbone's final hidden states [B, T, E] in place of the text logits
        (a loss can then compute the logits a block at a time)."""
        cfg = self.config
        inputs = tokens[:, :-1]
        b, t = inputs.shape[:2]
        positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
        hidden, _ = self.backbone(self.embed_tokens(inputs), positions, causal_mask(positions))
        target_speak = tokens[:, 1:, 1 : 1 + cfg.num_codebooks]
        start = jnp.full((b, t, 1), cfg.tokens.audio_empty, target_speak.dtype)
        prev = jnp.concatenate([start, target_speak[..., :-1]], axis=-1)
        audio, _ = self.depformer(hidden.reshape(b * t, -1), prev.reshape(b * t, -1))
        return hidden, audio.reshape(b, t, cfg.num_codebooks, -1)

    def backbone_step(self, tokens: jax.Array, positions: jax.Array, cache: KVCache):
        """tokens [B, S, 17] new columns at positions [B, S] -> (text logits [B, S, V], hidden [B, S, E], cache)."""
        mask = window_mask(positions, cache.window)
        hidden, new_kv = self.backbone(self.embed_tokens(tokens), positions, mask, cache)
        return self.text_logits(hidden), hidden, write_cache(cache, new_kv, positions)

    def depformer_step(self, hidden: jax.Array, prev_code: jax.Array, position: jax.Array, cache: DepformerCache):
        """hidden [B, E], prev_code [B] (the start token at position 0), position scalar -> (logits [B, A], cache)."""
        logits, new_kv = self.depformer(hidden, prev_code[:, None], position, cache)
        return logits[:, 0], DepformerCache(*new_kv)
