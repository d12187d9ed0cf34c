"""The depth transformer (`aud_output_layers`): 8 positions per frame, one per speak codebook.

Position c sees `wtes[c](prev_c) + wpe[c] + linear_in(h)[c]` where prev_0 is the start token and prev_c
the code of codebook c-1 of the frame being predicted. Attention is shared across positions (causal
over them); every layer has one SwiGLU MLP *per position*; codebook c's logits come from position c.
Per-position weights are stacked along a leading `codebooks` axis so a step can index them by a traced c.
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from flmjax.config import ModelConfig
from flmjax.model.backbone import dtypes
from flmjax.model.layers import RMSNorm, attend, constrain, param_with_axes
from flmjax.model.lora import LORA, dense, table


class DepformerCache(NamedTuple):
    """Keys/values of the positions computed so far in this frame: [layers, batch, 8, heads, head_dim]."""

    k: jax.Array
    v: jax.Array


def init_depformer_cache(config: ModelConfig, batch: int) -> DepformerCache:
    d = config.depformer
    shape = (d.num_layers, batch, config.num_codebooks, d.num_heads, d.head_dim)
    dtype = jnp.dtype(config.numerics.dtype)
    return DepformerCache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype))


def _at(weights: jax.Array, position: jax.Array | None, axis: int = 0) -> jax.Array:
    """The slice of a position-stacked weight for one (possibly traced) position, or all of them."""
    return weights if position is None else jax.lax.dynamic_index_in_dim(weights, position, axis, keepdims=True)


class DepformerLayer(nn.Module):
    config: ModelConfig
    returns_kv: bool = False

    @nn.compact
    def __call__(self, x, mask, position, cached_kv):
        """x [N, P, D] for P positions (all 8, or the one at `position`); mask [P, K] over keys."""
        cfg = self.config
        dep = cfg.depformer
        dtype, param_dtype = dtypes(cfg)
        init = nn.initializers.normal(cfg.initializer_range)
        proj_init = nn.initializers.normal(cfg.initializer_range / (2 * dep.num_layers) ** 0.5)
        n, p, d = x.shape
        h, hd = dep.num_heads, dep.head_dim
        # Rows stay split like the batch: otherwise XLA may gather all B*T rows to every device.
        x = constrain(x, ("activation_batch", None, None))

        y = RMSNorm(dep.norm_eps, param_dtype, name="ln_1")(x)
        c_attn = param_with_axes(
            self, "c_attn_kernel", init, (d, 3, h, hd), param_dtype, ("dep_embed", "qkv", "dep_heads", "head_dim")
        )
        qkv = dense(self, "c_attn_kernel", "npd,dthe->tnphe", y, c_attn, dtype, cfg.lora)
        q, k, v = qkv[0], qkv[1], qkv[2]
        if cached_kv is not None:
            k = jax.lax.dynamic_update_slice_in_dim(cached_kv[0], k, position, axis=1)
            v = jax.lax.dynamic_update_slice_in_dim(cached_kv[1], v, position, axis=1)
        out = attend(q[:, :, :, None, :], k, v, jnp.broadcast_to(mask, (n, *mask.shape)), hd**-0.5)
        c_proj = param_with_axes(
            self, "c_proj_kernel", proj_init, (h, hd, d), param_dtype, ("dep_heads", "head_dim", "dep_embed")
        )
        x = x + dense(self, "c_proj_kernel", "nphe,hed->npd", out[:, :, :, 0, :], c_proj, dtype, cfg.lora)

        y = RMSNorm(dep.norm_eps, param_dtype, name="ln_2")(x).astype(dtype)
        mlp_axes_in = ("codebooks", "dep_embed", "dep_mlp")
        stack = (cfg.num_codebooks,)
        gate = param_with_axes(self, "mlps_gate_proj", init, (*stack, d, dep.mlp_dim), param_dtype, mlp_axes_in)
        up = param_with_axes(self, "mlps_up_proj", init, (*stack, d, dep.mlp_dim), param_dtype, mlp_axes_in)
        down = param_with_axes(
            self, "mlps_down_proj", init, (*stack, dep.mlp_dim, d), param_dtype, ("codebooks", "dep_mlp", "dep_embed")
        )

        def project(name, spec, x, w):  # the weights (and adapters) of the positions computed
            return dense(self, name, spec, x, w, dtype, cfg.lora, select=lambda t: _at(t, position))

        hidden = nn.silu(project("mlps_gate_proj", "npd,pdf->npf", y, gate)) * project(
            "mlps_up_proj", "npd,pdf->npf", y, up
        )
        hidden = constrain(hidden, ("activation_batch", None, "activation_mlp"))
        x = constrain(x + project("mlps_down_proj", "npf,pfd->npd", hidden, down), ("activation_batch", None, None))
        return x, ((k, v) if self.returns_kv else None)


class Depformer(nn.Module):
    config: ModelConfig

    @nn.compact
    def __call__(self, h, prev_codes, position=None, cache: DepformerCache | None = None):
        """Teacher-forced: h [N, E], prev_codes [N, 8] -> logits [N, 8, A].

        One step: h [N, E], prev_codes [N, 1] (the code before `position`), position a scalar, cache ->
        logits [N, 1, A] and the layers' updated keys/values for the cache.
        """
        cfg = self.config
        dep = cfg.depformer
        dtype, param_dtype = dtypes(cfg)
        init = nn.initializers.normal(cfg.initializer_range)
        n_cb, a, d = cfg.num_codebooks, cfg.audio_vocab_size, dep.dim

        linear_in = param_with_axes(
            self, "linear_in", init, (cfg.hidden_size, n_cb, d), param_dtype, ("embed", "codebooks", "dep_embed")
        )
        wtes = param_with_axes(self, "wtes", init, (n_cb, a, d), param_dtype, ("codebooks", "audio_vocab", "dep_embed"))
        wpe = param_with_axes(self, "wpe", init, (n_cb, d), param_dtype, ("codebooks", "dep_embed"))
        heads = param_with_axes(
            self, "lm_heads", init, (n_cb, d, a), param_dtype, ("codebooks", "dep_embed", "audio_vocab")
        )

        wtes, heads = table(self, "wtes", wtes, cfg.lora), table(self, "lm_heads", heads, cfg.lora)
        tables = _at(wtes, position)  # [P, A, D]
        token_emb = jax.vmap(lambda table, ids: jnp.take(table, ids, axis=0), in_axes=(0, 1), out_axes=1)(
            tables, prev_codes
        )
        x = token_emb.astype(dtype) + _at(wpe, position).astype(dtype)
        x = x + jnp.einsum("ne,epd->npd", h.astype(dtype), _at(linear_in, position, axis=1).astype(dtype))

        if position is None:
            mask = jnp.tril(jnp.ones((n_cb, n_cb), bool))
            cached = None
        else:
            if cache is None:
                raise ValueError("Depformer: a step (position given) needs the cache")
            mask = (jnp.arange(n_cb) <= position)[None, :]
            cached = (cache.k, cache.v)
        layers = nn.scan(
            DepformerLayer,
            variable_axes={"params": 0, LORA: 0},
            split_rngs={"params": True, "dropout": True},
            in_axes=(nn.broadcast, nn.broadcast, 0),
            length=dep.num_layers,
            metadata_params={nn.PARTITION_NAME: "layers"},
        )(cfg, position is not None, name="h")
        x, new_kv = layers(x, mask, position, cached)
        x = RMSNorm(dep.norm_eps, param_dtype, name="ln_f")(x)
        logits = jnp.einsum("npd,pda->npa", x.astype(dtype), _at(heads, position).astype(dtype))
        return logits, new_kv
