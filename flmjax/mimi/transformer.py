"""Mimi's 25 Hz causal transformer: pre-LayerNorm, layer scale, interleaved RoPE, a 250-step context.

Two entry points with the reference's semantics: `Transformer.__call__` attends over a whole sequence
(each step sees itself and the `context - 1` steps before it), `Transformer.step` appends a few steps to a
KV ring of `context` slots per stream, with per-stream offsets so streams may start at different times.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from flmjax.mimi.config import MimiConfig
from flmjax.mimi.ops import UNSET, dense


def apply_rope(x: jax.Array, positions: jax.Array, max_period: float) -> jax.Array:
    """Rotate interleaved (real, imaginary) pairs of x [B, T, H, D] by angle position * freq."""
    dim = x.shape[-1]
    freqs = jnp.exp(jnp.arange(dim // 2, dtype=jnp.float32) * (-math.log(max_period) * 2 / dim))
    angles = positions.astype(jnp.float32)[:, :, None, None] * freqs  # [B, T, 1, D/2]
    cos, sin = jnp.cos(angles), jnp.sin(angles)
    real, imag = x[..., 0::2], x[..., 1::2]
    return jnp.stack([real * cos - imag * sin, real * sin + imag * cos], axis=-1).reshape(x.shape)


def attend(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
    """Softmax attention; q [..., Tq, H, D], k/v [..., Tk, H, D], mask [..., Tq, Tk] -> [..., Tq, H, D]."""
    scores = jnp.einsum("...qhd,...khd->...hqk", q, k) / math.sqrt(q.shape[-1])
    scores = jnp.where(mask[..., None, :, :], scores, -jnp.inf)
    out = jnp.einsum("...hqk,...khd->...hqd", jax.nn.softmax(scores, axis=-1), v)
    return jnp.swapaxes(out, -3, -2)  # XLA:CPU is slow when the matmul itself writes [..., q, h, d]


def banded_attention(q: jax.Array, k: jax.Array, v: jax.Array, context: int) -> jax.Array:
    """Causal attention limited to the last `context` steps, in blocks so memory grows linearly with T.

    Query block i (of `chunk` steps) only needs key blocks i - 1 and i.
    """
    batch, steps, heads, dim = q.shape
    chunk = min(steps, context)
    blocks = -(-steps // chunk)
    pad = ((0, 0), (0, blocks * chunk - steps), (0, 0), (0, 0))
    q, k, v = (jnp.pad(t, pad).reshape(batch, blocks, chunk, heads, dim) for t in (q, k, v))

    def with_previous_block(t: jax.Array) -> jax.Array:
        previous = jnp.pad(t, ((0, 0), (1, 0), (0, 0), (0, 0), (0, 0)))[:, :-1]
        return jnp.concatenate([previous, t], axis=2)  # [B, blocks, 2 * chunk, H, D]

    query_pos = jnp.arange(chunk)[:, None]
    key_pos = jnp.arange(2 * chunk)[None, :] - chunk  # relative to the block start
    delta = query_pos - key_pos
    mask = (delta >= 0) & (delta < context)
    first_block = jnp.arange(blocks)[:, None, None] == 0
    mask = mask & ~(first_block & (key_pos < 0))  # block 0 has no previous block
    out = attend(q, with_previous_block(k), with_previous_block(v), mask)
    return out.reshape(batch, blocks * chunk, heads, dim)[:, :steps]


class TransformerLayer(nn.Module):
    """x + scale1 * attn(LN(x)); then x + scale2 * W2 gelu(W1 LN(x)). Linears have no bias."""

    config: MimiConfig

    def setup(self) -> None:
        c = self.config
        d = c.dimension
        self.norm1 = nn.LayerNorm(epsilon=c.norm_eps, use_fast_variance=False)
        self.norm2 = nn.LayerNorm(epsilon=c.norm_eps, use_fast_variance=False)
        self.in_proj = self.param("in_proj", UNSET, (d, 3 * d))  # columns: (q|k|v, head, dim)
        self.out_proj = self.param("out_proj", UNSET, (d, d))
        self.linear1 = self.param("linear1", UNSET, (d, c.dim_feedforward))
        self.linear2 = self.param("linear2", UNSET, (c.dim_feedforward, d))
        self.layer_scale_1 = self.param("layer_scale_1", UNSET, (d,))
        self.layer_scale_2 = self.param("layer_scale_2", UNSET, (d,))

    def _qkv(self, x: jax.Array, positions: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        c = self.config
        batch, steps, _ = x.shape
        qkv = dense(self.norm1(x), self.in_proj).reshape(batch, steps, 3, c.num_heads, c.head_dim)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        return apply_rope(q, positions, c.max_period), apply_rope(k, positions, c.max_period), v

    def _finish(self, x: jax.Array, attended: jax.Array) -> jax.Array:
        x = x + self.layer_scale_1 * dense(attended.reshape(x.shape), self.out_proj)
        hidden = jax.nn.gelu(dense(self.norm2(x), self.linear1), approximate=False)
        return x + self.layer_scale_2 * dense(hidden, self.linear2)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Whole sequence [B, T, d], positions 0..T-1."""
        positions = jnp.arange(x.shape[1])[None].repeat(x.shape[0], 0)
        q, k, v = self._qkv(x, positions)
        return self._finish(x, banded_attention(q, k, v, self.config.context))

    def step(self, x: jax.Array, positions: jax.Array, cache: dict[str, jax.Array]) -> tuple[jax.Array, dict]:
        """A few steps x [B, T, d] at positions [B, T] appended to the rings of the last `capacity` steps:
        keys [B, H, D, capacity], values [B, H, capacity, D] (the layouts the two attention matmuls read)."""
        q, k, v = self._qkv(x, positions)
        capacity = cache["values"].shape[2]
        slots = positions % capacity

        def write(keys: jax.Array, values: jax.Array, slot: jax.Array, k: jax.Array, v: jax.Array) -> tuple:
            return keys.at[:, :, slot].set(k.transpose(1, 2, 0)), values.at[:, slot].set(v.transpose(1, 0, 2))

        keys, values = jax.vmap(write)(cache["keys"], cache["values"], slots, k, v)
        # Position held by each slot: the newest p <= last written with p = slot (mod capacity); < 0 if never.
        last = positions[:, -1:]
        key_pos = last - (last - jnp.arange(capacity)[None]) % capacity  # [B, capacity]
        delta = positions[:, :, None] - key_pos[:, None, :]
        mask = (key_pos[:, None, :] >= 0) & (delta >= 0) & (delta < self.config.context)
        scores = jnp.einsum("bqhd,bhdk->bhqk", q, keys) / math.sqrt(q.shape[-1])
        weights = jax.nn.softmax(jnp.where(mask[:, None], scores, -jnp.inf), axis=-1)
        attended = jnp.einsum("bhqk,bhkd->bhqd", weights, values).transpose(0, 2, 1, 3)  # see `attend`
        return self._finish(x, attended), {"keys": keys, "values": values}


class Transformer(nn.Module):
    """A stack of `num_layers` TransformerLayers on [B, T, dimension], no final norm."""

    config: MimiConfig

    def setup(self) -> None:
        self.layers = [TransformerLayer(self.config) for _ in range(self.config.num_layers)]

    def init_state(self, batch_size: int) -> dict[str, Any]:
        c = self.config
        keys = (batch_size, c.num_heads, c.head_dim, c.context)
        values = (batch_size, c.num_heads, c.context, c.head_dim)
        return {
            "offset": jnp.zeros((batch_size,), jnp.int32),  # steps seen so far by each stream
            "layers": [{"keys": jnp.zeros(keys), "values": jnp.zeros(values)} for _ in range(c.num_layers)],
        }

    def __call__(self, x: jax.Array) -> jax.Array:
        for layer in self.layers:
            x = layer(x)
        return x

    def step(self, x: jax.Array, state: dict[str, Any]) -> tuple[jax.Array, dict[str, Any]]:
        positions = state["offset"][:, None] + jnp.arange(x.shape[1], dtype=jnp.int32)
        caches = []
        for layer, cache in zip(self.layers, state["layers"]):
            x, cache = layer.step(x, positions, cache)
            caches.append(cache)
        return x, {"offset": state["offset"] + x.shape[1], "layers": caches}
