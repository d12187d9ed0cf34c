"""The temporal transformer: summed stream embeddings, Qwen2-style decoder layers, final norm.

Attention works on explicit positions so one code path serves the teacher-forced forward (keys are the
sequence itself) and incremental decoding (keys are a fixed-size ring cache plus the new columns).
While decoding, the ring is read in blocks of `decode_block` slots, only as many as the conversations
have filled (a traced trip count, so a young conversation neither pays for the empty slots nor
recompiles as it grows), with an online softmax across the blocks.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from flmjax.config import ModelConfig
from flmjax.model.layers import (
    RMSNorm,
    SwiGLU,
    apply_rope,
    attend,
    attend_online,
    constrain,
    param_with_axes,
    rope_cos_sin,
)
from flmjax.model.lora import LORA, dense, table

REMAT_POLICY_FNS = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


class KVCache(NamedTuple):
    """Fixed-size ring cache of the backbone: slot `p % window` holds position p.

    k, v: [layers, batch, window, kv_heads, head_dim]; pos: [batch, window] absolute position held in
    each slot (-1 = empty). Every stream of the batch keeps its own positions.
    """

    k: jax.Array
    v: jax.Array
    pos: jax.Array

    @property
    def window(self) -> int:
        return self.pos.shape[-1]


class RingView(NamedTuple):
    """What a decoding layer reads of the ring: the whole stacked cache (sliced per layer and block
    inside the loop, so no layer's window is ever copied out) and how many blocks hold keys."""

    k: jax.Array  # [L, B, W, KV, D]
    v: jax.Array
    pos: jax.Array  # [B, W]
    num_blocks: jax.Array  # int32 scalar


def ring_block_size(config: ModelConfig, window: int) -> int:
    return min(config.numerics.decode_block, window) if config.numerics.decode_block > 0 else window


def filled_blocks(config: ModelConfig, cache_pos: jax.Array) -> jax.Array:
    """Blocks of the ring holding any key: slot p % W holds position p, so while every position is
    below W the filled slots are 0..max(pos); after that the whole ring is in use."""
    window = cache_pos.shape[-1]
    filled = jnp.minimum(cache_pos.max() + 1, window)
    return -(-filled // ring_block_size(config, window))


def attend_ring(q, new_k, new_v, new_mask, ring: RingView, layer, positions, block: int) -> jax.Array:
    """q [B, S, KV, G, D] over the new columns (new_mask [B, S, S]) then the ring's filled blocks.

    Block i covers slots [i*block, (i+1)*block); the last one, where block does not divide the window,
    is read from window - block on and its slots below i*block (seen already) are masked out."""
    window = ring.pos.shape[-1]
    b, _, kvh, _, d = q.shape
    query = positions[:, :, None]

    def block_at(i):
        start = jnp.minimum(i * block, window - block)
        k = jax.lax.dynamic_slice(ring.k, (layer, 0, start, 0, 0), (1, b, block, kvh, d))[0]
        v = jax.lax.dynamic_slice(ring.v, (layer, 0, start, 0, 0), (1, b, block, kvh, d))[0]
        key = jax.lax.dynamic_slice_in_dim(ring.pos, start, block, axis=1)[:, None, :]
        unseen = (start + jnp.arange(block) >= i * block)[None, None, :]
        return k, v, unseen & (key >= 0) & (key <= query) & (key > query - window)

    return attend_online(q, (new_k, new_v, new_mask), ring.num_blocks, block_at, q.shape[-1] ** -0.5)


def init_kv_cache(config: ModelConfig, batch: int, window: int) -> KVCache:
    shape = (config.num_layers, batch, window, config.num_kv_heads, config.head_dim)
    dtype = jnp.dtype(config.numerics.dtype)
    return KVCache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype), jnp.full((batch, window), -1, jnp.int32))


def dtypes(config: ModelConfig) -> tuple[jnp.dtype, jnp.dtype]:
    return jnp.dtype(config.numerics.dtype), jnp.dtype(config.numerics.param_dtype)


class StreamEmbedding(nn.Module):
    """text_emb(text) + sum_c (speak_emb[c](speak_c) + listen_emb[c](listen_c)), summed in the release's order."""

    config: ModelConfig

    @nn.compact
    def __call__(self, tokens: jax.Array) -> jax.Array:
        cfg = self.config
        dtype, param_dtype = dtypes(cfg)
        init = nn.initializers.normal(cfg.initializer_range)
        n = cfg.num_codebooks
        text = param_with_axes(
            self, "text_embeddings", init, (cfg.vocab_size, cfg.hidden_size), param_dtype, ("vocab", "embed")
        )
        table_shape = (n, cfg.audio_vocab_size, cfg.hidden_size)
        table_axes = ("codebooks", "audio_vocab", "embed")
        speak = param_with_axes(self, "aud_speak_embeddings", init, table_shape, param_dtype, table_axes)
        listen = param_with_axes(self, "aud_listen_embeddings", init, table_shape, param_dtype, table_axes)
        speak, listen = (
            table(self, "aud_speak_embeddings", speak, cfg.lora),
            table(self, "aud_listen_embeddings", listen, cfg.lora),
        )
        emb = jnp.take(text, tokens[..., 0], axis=0).astype(dtype)
        for c in range(n):
            pair = jnp.take(speak[c], tokens[..., 1 + c], axis=0).astype(dtype) + jnp.take(
                listen[c], tokens[..., 1 + n + c], axis=0
            ).astype(dtype)
            emb = emb + pair
        if cfg.use_mup:
            emb = emb * jnp.asarray(cfg.input_mult, dtype)
        return constrain(emb, ("activation_batch", "activation_length", "activation_embed"))


class Attention(nn.Module):
    """GQA self-attention: q/k/v with bias, o without; RoPE applied before keys enter the cache."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x, cos, sin, mask, ring: RingView | None, layer, positions):
        cfg = self.config
        dtype, param_dtype = dtypes(cfg)
        init = nn.initializers.normal(cfg.initializer_range)
        e, h, kvh, d = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim

        def project(name, heads, head_axis):
            w = param_with_axes(
                self, f"{name}_proj_kernel", init, (e, heads, d), param_dtype, ("embed", head_axis, "head_dim")
            )
            y = dense(self, f"{name}_proj_kernel", "bse,ehd->bshd", x, w, dtype, cfg.lora)
            if cfg.qkv_bias:
                b = param_with_axes(
                    self, f"{name}_proj_bias", nn.initializers.zeros, (heads, d), param_dtype, (head_axis, "head_dim")
                )
                y = y + b.astype(dtype)
            return y

        q = apply_rope(project("q", h, "q_heads"), cos, sin)
        k = apply_rope(project("k", kvh, "kv_heads"), cos, sin)
        v = project("v", kvh, "kv_heads")
        q = constrain(q, ("activation_batch", "activation_length", "activation_heads", None))
        b, s = q.shape[:2]
        grouped = q.reshape(b, s, kvh, h // kvh, d)
        if ring is None:
            out = attend(grouped, k, v, mask, d**-0.5, cfg.numerics.attention_chunk)
        else:
            block = ring_block_size(cfg, ring.pos.shape[-1])
            out = attend_ring(grouped, k, v, mask, ring, layer, positions, block)
        wo = param_with_axes(self, "o_proj_kernel", init, (h, d, e), param_dtype, ("q_heads", "head_dim", "embed"))
        y = dense(self, "o_proj_kernel", "bshd,hde->bse", out.reshape(b, s, h, d), wo, dtype, cfg.lora)
        if cfg.o_bias:
            y = y + param_with_axes(self, "o_proj_bias", nn.initializers.zeros, (e,), param_dtype, ("embed",)).astype(
                dtype
            )
        return y, (k, v)


class DecoderLayer(nn.Module):
    config: ModelConfig
    returns_kv: bool = False  # decoding returns this layer's new keys/values for the cache

    @nn.compact
    def __call__(self, x, cos, sin, mask, positions, ring, layer):
        cfg = self.config
        dtype, param_dtype = dtypes(cfg)
        residual = x
        y = RMSNorm(cfg.rms_norm_eps, param_dtype, name="input_layernorm")(x)
        y, new_kv = Attention(cfg, name="self_attn")(y, cos, sin, mask, ring, layer, positions)
        x = residual + y
        y = RMSNorm(cfg.rms_norm_eps, param_dtype, name="post_attention_layernorm")(x)
        y = SwiGLU(
            cfg.intermediate_size,
            dtype,
            param_dtype,
            nn.initializers.normal(cfg.initializer_range),
            cfg.lora,
            name="mlp",
        )(y)
        x = constrain(x + y, ("activation_batch", "activation_length", "activation_embed"))
        return x, (new_kv if self.returns_kv else None)


class Backbone(nn.Module):
    """Decoder layers (stacked under one `layers` scope, scanned or unrolled) and the final norm."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x, positions, mask, cache: KVCache | None = None):
        """x [B, S, E] embeddings; positions [B, S]; mask [B, S, S] among the columns themselves; with
        a ring `cache` (decoding) the columns also attend to its last `window` positions.

        Returns the final-normed hidden states and, when decoding with a cache, the new columns'
        keys/values [L, B, S, KV, D].
        """
        cfg = self.config
        layer_cls = DecoderLayer
        if cfg.numerics.remat != "none":
            layer_cls = nn.remat(layer_cls, policy=REMAT_POLICY_FNS[cfg.numerics.remat], prevent_cse=False)
        cos, sin = rope_cos_sin(positions, cfg.head_dim, cfg.rope_theta)
        layers = nn.scan(
            layer_cls,
            variable_axes={"params": 0, LORA: 0},
            split_rngs={"params": True, "dropout": True},
            in_axes=(nn.broadcast, nn.broadcast, nn.broadcast, nn.broadcast, nn.broadcast, 0),
            length=cfg.num_layers,
            unroll=1 if cfg.numerics.scan_layers else cfg.num_layers,
            metadata_params={nn.PARTITION_NAME: "layers"},
        )(cfg, cache is not None, name="layers")
        if cache is None:
            ring, layer_ids = None, None
        else:
            ring = RingView(cache.k, cache.v, cache.pos, filled_blocks(cfg, cache.pos))
            layer_ids = jnp.arange(cfg.num_layers)
        x, new_kv = layers(x, cos, sin, mask, positions, ring, layer_ids)
        x = RMSNorm(cfg.rms_norm_eps, dtypes(cfg)[1], name="norm")(x)
        return x, new_kv


def causal_mask(positions: jax.Array) -> jax.Array:
    """[B, S] positions -> [B, S, S]: a column sees itself and earlier columns."""
    return positions[:, None, :] <= positions[:, :, None]


def window_mask(positions: jax.Array, window: int) -> jax.Array:
    """[B, S] positions -> [B, S, S]: a column sees itself and the earlier columns of the last `window`."""
    q, k = positions[:, :, None], positions[:, None, :]
    return (k <= q) & (k > q - window)


def write_cache(cache: KVCache, new_kv: tuple[jax.Array, jax.Array], positions: jax.Array) -> KVCache:
    """Write the new columns' keys/values [L, B, S, KV, D] at slots `positions % window`."""
    if positions.shape[1] > cache.window:
        raise ValueError(f"{positions.shape[1]} new columns do not fit a cache window of {cache.window}")
    slots = positions % cache.window  # [B, S]
    batch = jnp.arange(positions.shape[0])[:, None]
    k = cache.k.at[:, batch, slots].set(new_kv[0].astype(cache.k.dtype))
    v = cache.v.at[:, batch, slots].set(new_kv[1].astype(cache.v.dtype))
    return KVCache(k, v, cache.pos.at[batch, slots].set(positions))


def make_text_head(module: nn.Module, config: ModelConfig) -> Any:
    """The untied `lm_head` [E, V] parameter."""
    return param_with_axes(
        module,
        "lm_head",
        nn.initializers.normal(config.initializer_range),
        (config.hidden_size, config.vocab_size),
        jnp.dtype(config.numerics.param_dtype),
        ("embed", "vocab"),
    )
