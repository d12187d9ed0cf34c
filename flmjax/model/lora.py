"""LoRA: low-rank adapters on a frozen base, written as a parameter-tree transform the layers read.

A target weight W of shape [stack..., in..., out...] (stack: the scanned layer axis, the depformer's
positions or codebooks) gets factors A [stack..., in..., r] and B [stack..., r, out...]; the adapted
weight is W + scale * A @ B (contracting r). The factors live in their own variable collection
(`lora`), at the module path of their weight and named `<weight>_a` / `<weight>_b`, so the base stays
a plain, untouched `params` tree (frozen, in the compute dtype) and only the factors are trained.

- Projections (`dense`) add scale * (dropout(x) A) B to x W: the merged weight is never formed and the
  adapter's input dropout is the usual one.
- Look-up tables (`table`) are merged at use, per layer: a look-up has no input to drop out.
- `merge` folds the factors into the base (exports, inference with `--lora`); `init_adapters` makes
  fresh ones (A normal with std 1/sqrt(fan_in), B zero: the adapted model starts as the base).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from flmjax.config import LoraConfig

LORA = "lora"  # the variable collection of the factors

# Weight name -> (number of input axes, number of output axes), counted from the weight's end; the
# axes before them are stacked (each stacked slice has its own factors).
SPLITS: dict[str, tuple[int, int]] = {
    "q_proj_kernel": (1, 2),  # [E, H, D]
    "k_proj_kernel": (1, 2),
    "v_proj_kernel": (1, 2),
    "o_proj_kernel": (2, 1),  # [H, D, E]
    "gate_proj": (1, 1),
    "up_proj": (1, 1),
    "down_proj": (1, 1),
    "c_attn_kernel": (1, 3),  # [d, 3, h, hd]
    "c_proj_kernel": (2, 1),  # [h, hd, d]
    "mlps_gate_proj": (1, 1),  # [P, d, f]: one adapter per depformer position
    "mlps_up_proj": (1, 1),
    "mlps_down_proj": (1, 1),
    "aud_speak_embeddings": (1, 1),  # [8, A, E]: one adapter per codebook
    "aud_listen_embeddings": (1, 1),
    "wtes": (1, 1),
    "lm_heads": (1, 1),
}
TARGET_WEIGHTS: dict[str, tuple[str, ...]] = {
    "attention": ("q_proj_kernel", "k_proj_kernel", "v_proj_kernel", "o_proj_kernel"),
    "mlp": ("gate_proj", "up_proj", "down_proj"),
    "depformer": ("c_attn_kernel", "c_proj_kernel", "mlps_gate_proj", "mlps_up_proj", "mlps_down_proj"),
    "audio_tables": ("aud_speak_embeddings", "aud_listen_embeddings", "wtes", "lm_heads"),
}


def targeted(lora: LoraConfig) -> set[str]:
    return {name for group in lora.targets for name in TARGET_WEIGHTS[group]}


def factor_shapes(shape: tuple[int, ...], name: str, rank: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    n_in, n_out = SPLITS[name]
    stack = len(shape) - n_in - n_out
    return (*shape[: stack + n_in], rank), (*shape[:stack], rank, *shape[stack + n_in :])


def delta(a: jax.Array, b: jax.Array, n_in: int) -> jax.Array:
    """A @ B over the rank axis, stacked axes kept: [stack, in, r] x [stack, r, out] -> [stack, in, out]."""
    stack, rank = a.shape[: a.ndim - 1 - n_in], a.shape[-1]
    ins, outs = a.shape[len(stack) : -1], b.shape[len(stack) + 1 :]
    s, i, o = int(np.prod(stack)), int(np.prod(ins)), int(np.prod(outs))
    d = jnp.einsum("sir,sro->sio", a.reshape(s, i, rank), b.reshape(s, rank, o))
    return d.reshape(*stack, *ins, *outs)


# --- inside the modules ----------------------------------------------------------------------------------


def _factors(module: nn.Module, name: str) -> tuple[jax.Array, jax.Array] | None:
    if not module.has_variable(LORA, f"{name}_a"):
        return None
    return module.get_variable(LORA, f"{name}_a"), module.get_variable(LORA, f"{name}_b")


def _adapter_einsum(spec: str, name: str) -> str:
    """`x,w->y` -> `x,a,b->y` with the factors' labels (a fresh letter for the rank)."""
    inputs, out = spec.split("->")
    x, w = inputs.split(",")
    n_in, n_out = SPLITS[name]
    stack = len(w) - n_in - n_out
    r = next(c for c in "rzyxwvutsq" if c not in spec)
    return f"{x},{w[: stack + n_in]}{r},{w[:stack]}{r}{w[stack + n_in :]}->{out}"


def dense(
    module: nn.Module,
    name: str,
    spec: str,
    x: jax.Array,
    w: jax.Array,
    dtype: Any,
    lora: LoraConfig | None,
    select: Callable[[jax.Array], jax.Array] | None = None,
) -> jax.Array:
    """einsum(spec, x, w) in `dtype`, plus the adapter of weight `name` when the module has one.

    `select` picks the stacked slices used (the depformer's position while decoding), the same on the
    weight and on both factors (their stacked axes lead)."""
    pick = select or (lambda t: t)
    x = x.astype(dtype)
    y = jnp.einsum(spec, x, pick(w).astype(dtype))
    if lora is None or (factors := _factors(module, name)) is None:
        return y
    a, b = (pick(f).astype(dtype) for f in factors)
    if lora.dropout > 0 and module.has_rng("dropout"):
        keep = jax.random.bernoulli(module.make_rng("dropout"), 1.0 - lora.dropout, x.shape)
        x = jnp.where(keep, x / (1.0 - lora.dropout), 0).astype(dtype)
    return y + jnp.asarray(lora.scale, dtype) * jnp.einsum(_adapter_einsum(spec, name), x, a, b)


def table(module: nn.Module, name: str, w: jax.Array, lora: LoraConfig | None) -> jax.Array:
    """A look-up table (or small head) with its adapter merged in, in fp32 (the caller casts)."""
    if lora is None or (factors := _factors(module, name)) is None:
        return w
    a, b = (f.astype(jnp.float32) for f in factors)
    return w.astype(jnp.float32) + lora.scale * delta(a, b, SPLITS[name][0])


# --- the parameter tree -------------------------------------------------------------------------------------


def _targets(params: Mapping[str, Any], lora: LoraConfig) -> dict[tuple[str, ...], Any]:
    wanted = targeted(lora)
    return {path: leaf for path, leaf in traverse_util.flatten_dict(params).items() if path[-1] in wanted}


def _fan_in(shape: tuple[int, ...], name: str) -> int:
    n_in, n_out = SPLITS[name]
    return int(np.prod(shape[len(shape) - n_in - n_out : len(shape) - n_out]))


def init_adapters(params: Mapping[str, Any], lora: LoraConfig, key: jax.Array, dtype: Any = jnp.float32) -> dict:
    """Fresh factors for every targeted weight of `params` (arrays or shapes): A ~ N(0, 1/fan_in), B = 0."""
    out = {}
    for k, (path, w) in enumerate(sorted(_targets(params, lora).items())):
        a_shape, b_shape = factor_shapes(tuple(w.shape), path[-1], lora.rank)
        std = _fan_in(tuple(w.shape), path[-1]) ** -0.5
        out[(*path[:-1], f"{path[-1]}_a")] = std * jax.random.normal(jax.random.fold_in(key, k), a_shape, dtype)
        out[(*path[:-1], f"{path[-1]}_b")] = jnp.zeros(b_shape, dtype)
    if not out:
        raise ValueError(f"lora.targets {lora.targets} name no weight of this model")
    return traverse_util.unflatten_dict(out)


def adapter_specs(param_specs: Mapping[str, Any], params: Mapping[str, Any], lora: LoraConfig) -> dict:
    """Logical PartitionSpecs of the factors from their weights': A keeps the stacked and input axes' names,
    B the stacked and output ones; the rank axis is whole."""
    specs = traverse_util.flatten_dict(param_specs, is_leaf=lambda _, v: isinstance(v, jax.sharding.PartitionSpec))
    out = {}
    for path, w in _targets(params, lora).items():
        n_in, n_out = SPLITS[path[-1]]
        axes = tuple(specs[path]) + (None,) * (len(w.shape) - len(specs[path]))
        stack = len(w.shape) - n_in - n_out
        out[(*path[:-1], f"{path[-1]}_a")] = jax.sharding.PartitionSpec(*axes[: stack + n_in], None)
        out[(*path[:-1], f"{path[-1]}_b")] = jax.sharding.PartitionSpec(*axes[:stack], None, *axes[stack + n_in :])
    return traverse_util.unflatten_dict(out)


def merge(params: Mapping[str, Any], adapters: Mapping[str, Any], lora: LoraConfig) -> dict:
    """The base with every adapter folded in: W + scale * A @ B, computed in fp32, in W's dtype."""
    flat = traverse_util.flatten_dict(params)
    factors = traverse_util.flatten_dict(adapters)
    for path in {p[:-1] + (p[-1][:-2],) for p in factors}:
        if path not in flat:
            raise ValueError(f"adapter for {'/'.join(path)}, which the base does not have")
        w = flat[path]
        a, b = factors[(*path[:-1], f"{path[-1]}_a")], factors[(*path[:-1], f"{path[-1]}_b")]
        d = delta(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32), SPLITS[path[-1]][0])
        flat[path] = (jnp.asarray(w, jnp.float32) + lora.scale * d).astype(w.dtype)
    return traverse_util.unflatten_dict(flat)


def fingerprint(params: Mapping[str, Any], samples: int = 64) -> str:
    """A short identity of a parameter tree: each weight's path, shape and `samples` evenly spaced values
    rounded to bfloat16 (so the same weights held in fp32 or bf16 agree). Cheap on any mesh."""
    flat = sorted(traverse_util.flatten_dict(params).items())

    def picks(leaf):
        n = int(np.prod(leaf.shape))
        idx = np.linspace(0, n - 1, min(samples, n)).astype(np.int64)
        return jnp.ravel(leaf)[idx].astype(jnp.bfloat16).astype(jnp.float32)

    values = jax.device_get(jax.jit(lambda leaves: [picks(x) for x in leaves])([leaf for _, leaf in flat]))
    h = hashlib.sha256()
    for (path, leaf), v in zip(flat, values):
        h.update(f"{'/'.join(path)}:{tuple(leaf.shape)};".encode())
        h.update(np.asarray(v, np.float32).tobytes())
    return h.hexdigest()[:16]
