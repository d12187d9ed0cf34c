"""Building blocks shared by the backbone and the depformer: RMSNorm, RoPE, attention, SwiGLU."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Initializer = nn.initializers.Initializer


def param_with_axes(module: nn.Module, name: str, init: Initializer, shape: Sequence[int], dtype, axes: Sequence[str]):
    """A parameter annotated with logical axis names (one name per dimension)."""
    if len(axes) != len(shape):
        raise ValueError(f"{name}: {len(shape)} dims but {len(axes)} axis names")
    return module.param(name, nn.with_logical_partitioning(init, tuple(axes)), tuple(shape), dtype)


def constrain(x: jax.Array, axes: Sequence[str | None]) -> jax.Array:
    """Activation sharding by logical name; a no-op outside a mesh with rules."""
    return nn.with_logical_constraint(x, tuple(axes))


class RMSNorm(nn.Module):
    """RMSNorm in the release's cast order: normalise in fp32, cast back, then multiply by the weight."""

    eps: float
    param_dtype: jnp.dtype = jnp.float32
    axis_name: str = "norm"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        weight = param_with_axes(
            self, "weight", nn.initializers.ones, (x.shape[-1],), self.param_dtype, (self.axis_name,)
        )
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return weight.astype(x.dtype) * normed.astype(x.dtype)


def rope_cos_sin(positions: jax.Array, head_dim: int, theta: float) -> tuple[jax.Array, jax.Array]:
    """cos/sin tables [..., head_dim] in fp32 for integer positions [...] (HF rotate-half layout)."""
    inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    freqs = positions.astype(jnp.float32)[..., None] * inv_freq
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(emb), jnp.sin(emb)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """x [B, S, heads, D]; cos/sin [B, S, D]. As HF, the tables are cast to x's dtype first."""
    cos = cos[:, :, None, :].astype(x.dtype)
    sin = sin[:, :, None, :].astype(x.dtype)
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rotated * sin


def attend(q: jax.Array, keys, values, mask: jax.Array, scale: float, chunk: int = 0) -> jax.Array:
    """Grouped-query attention with fp32 softmax.

    q [B, S, KV, G, D] (query head j*G+g is group g of kv head j, as HF `repeat_kv`); keys/values are one
    array [B, K, KV, D] or a list of blocks whose lengths add up to K (a decoding step passes the cache
    and the new columns as two blocks, so the cache is never copied into a concatenation); mask
    [B, S, K] (True = may attend). With `chunk` > 0 the queries are processed in blocks of that many
    rows so a long sequence never holds the whole [S, K] score matrix at once.
    """
    keys = list(keys) if isinstance(keys, (list, tuple)) else [keys]
    values = list(values) if isinstance(values, (list, tuple)) else [values]
    splits = [k.shape[1] for k in keys]

    def block(q_blk: jax.Array, mask_blk: jax.Array) -> jax.Array:
        scores = jnp.concatenate([jnp.einsum("bskgd,btkd->bkgst", q_blk, k) for k in keys], axis=-1)
        scores = scores.astype(jnp.float32) * scale
        scores = jnp.where(mask_blk[:, None, None, :, :], scores, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(scores, axis=-1).astype(values[0].dtype)
        starts = [sum(splits[:i]) for i in range(len(splits))]
        return sum(
            jnp.einsum("bkgst,btkd->bskgd", probs[..., start : start + n], v)
            for start, n, v in zip(starts, splits, values)
        )

    s = q.shape[1]
    if chunk <= 0 or s <= chunk:
        return block(q, mask)
    if s % chunk:
        raise ValueError(f"sequence length {s} is not a multiple of attention_chunk {chunk}")
    n = s // chunk
    q_blocks = q.reshape(q.shape[0], n, chunk, *q.shape[2:]).swapaxes(0, 1)
    mask_blocks = mask.reshape(mask.shape[0], n, chunk, mask.shape[-1]).swapaxes(0, 1)
    out = jax.lax.map(lambda args: block(*args), (q_blocks, mask_blocks))
    return out.swapaxes(0, 1).reshape(q.shape)


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)), no biases."""

    hidden: int
    dtype: jnp.dtype
    param_dtype: jnp.dtype
    init: Initializer
    in_axis: str = "embed"
    hidden_axis: str = "mlp"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        dim = x.shape[-1]
        gate = param_with_axes(
            self, "gate_proj", self.init, (dim, self.hidden), self.param_dtype, (self.in_axis, self.hidden_axis)
        )
        up = param_with_axes(
            self, "up_proj", self.init, (dim, self.hidden), self.param_dtype, (self.in_axis, self.hidden_axis)
        )
        down = param_with_axes(
            self, "down_proj", self.init, (self.hidden, dim), self.param_dtype, (self.hidden_axis, self.in_axis)
        )
        x = x.astype(self.dtype)
        h = nn.silu(x @ gate.astype(self.dtype)) * (x @ up.astype(self.dtype))
        return h @ down.astype(self.dtype)
