"""Building blocks shared by the backbone and the depformer: RMSNorm, RoPE, attention, SwiGLU."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from flmjax.config import LoraConfig
from flmjax.model.lora import dense

Initializer = nn.initializers.Initializer
SCALE_SUFFIX = "_scale"  # beside an int8 kernel: its per-output-channel scales (flmjax.model.quant)


def param_with_axes(module: nn.Module, name: str, init: Initializer, shape: Sequence[int], dtype, axes: Sequence[str]):
    """A parameter annotated with logical axis names (one name per dimension).

    An int8 kernel (with a `<name>_scale` parameter beside it, see flmjax.model.quant) is returned
    dequantised to `dtype`; in a jitted step XLA fuses the dequantisation into the kernel's reads."""
    if len(axes) != len(shape):
        raise ValueError(f"{name}: {len(shape)} dims but {len(axes)} axis names")
    # flax types param as the initializer's result (here the boxed LogicallyPartitioned); it returns the array.
    value: jax.Array = module.param(  # type: ignore[assignment]
        name, nn.with_logical_partitioning(init, tuple(axes)), tuple(shape), dtype
    )
    if module.has_variable("params", name + SCALE_SUFFIX):
        scale: jax.Array = module.get_variable("params", name + SCALE_SUFFIX)
        value = (value.astype(jnp.float32) * scale).astype(dtype)
    return value


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


def attend(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, scale: float, chunk: int = 0) -> jax.Array:
    """Grouped-query attention with fp32 softmax.

    q [B, S, KV, G, D] (query head j*G+g is group g of kv head j, as HF `repeat_kv`); k/v [B, K, KV, D];
    mask [B, S, K] (True = may attend). With `chunk` > 0 the queries are processed in blocks of that
    many rows so a long sequence never holds the whole [S, K] score matrix at once.
    """

    def block(q_blk: jax.Array, mask_blk: jax.Array) -> jax.Array:
        scores = jnp.einsum("bskgd,btkd->bkgst", q_blk, k).astype(jnp.float32) * scale
        scores = jnp.where(mask_blk[:, None, None, :, :], scores, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
        return jnp.einsum("bkgst,btkd->bskgd", probs, v)

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


def attend_online(q: jax.Array, first, num_blocks: jax.Array, block_at, scale: float) -> jax.Array:
    """Grouped-query attention over key blocks with an online (running) fp32 softmax.

    q [B, S, KV, G, D]; `first` = (keys [B, T, KV, D], values, mask [B, S, T]) is always attended;
    then `block_at(i)` -> (keys, values, mask) for i in [0, num_blocks), where num_blocks may be traced:
    the loop's trip count is data, so the work follows it without a recompile. Every query row must see
    at least one key of `first` (the running max starts there), as a decoding column sees itself.
    """
    neg = jnp.finfo(jnp.float32).min

    def update(carry, block):
        m, total, acc = carry
        k, v, mask = block
        s = jnp.einsum("bskgd,btkd->bkgst", q, k, preferred_element_type=jnp.float32) * scale
        mask = mask[:, None, None]
        s = jnp.where(mask, s, neg)
        m_new = jnp.maximum(m, s.max(-1))
        p = jnp.where(mask, jnp.exp(s - m_new[..., None]), 0.0)
        correction = jnp.exp(m - m_new)
        pv = jnp.einsum("bkgst,btkd->bkgsd", p.astype(v.dtype), v, preferred_element_type=jnp.float32)
        return m_new, total * correction + p.sum(-1), acc * correction[..., None] + pv

    b, s, kvh, g, d = q.shape
    init = (
        jnp.full((b, kvh, g, s), neg, jnp.float32),
        jnp.zeros((b, kvh, g, s), jnp.float32),
        jnp.zeros((b, kvh, g, s, d), jnp.float32),
    )
    carry = update(init, first)
    _, total, acc = jax.lax.fori_loop(0, num_blocks, lambda i, c: update(c, block_at(i)), carry)
    out = acc / total[..., None]
    return jnp.transpose(out, (0, 3, 1, 2, 4)).astype(q.dtype)


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)), no biases."""

    hidden: int
    dtype: jnp.dtype
    param_dtype: jnp.dtype
    kernel_init: Initializer  # not `init`: that is Module.init
    lora: LoraConfig | None = None
    in_axis: str = "embed"
    hidden_axis: str = "mlp"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        dim = x.shape[-1]
        gate = param_with_axes(
            self, "gate_proj", self.kernel_init, (dim, self.hidden), self.param_dtype, (self.in_axis, self.hidden_axis)
        )
        up = param_with_axes(
            self, "up_proj", self.kernel_init, (dim, self.hidden), self.param_dtype, (self.in_axis, self.hidden_axis)
        )
        down = param_with_axes(
            self, "down_proj", self.kernel_init, (self.hidden, dim), self.param_dtype, (self.hidden_axis, self.in_axis)
        )

        def project(name, x, w):
            return dense(self, name, "...d,df->...f", x, w, self.dtype, self.lora)

        h = nn.silu(project("gate_proj", x, gate)) * project("up_proj", x, up)
        return project("down_proj", h, down)
