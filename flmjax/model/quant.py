"""int8 weight-only quantisation: int8 matmul kernels with one fp32 scale per output channel.

A quantised kernel keeps its name and shape in the params tree (int8 values) and gets a
`<name>_scale` parameter beside it, shaped like the kernel with the contracted (input) axes kept as 1,
so it dequantises as `int8 * scale` by broadcasting; `param_with_axes` does that where the kernel is
read, so activations stay in the compute dtype. Symmetric, scale = absmax / 127 per output channel.

Quantised: every matmul kernel of the backbone, the text head and the depformer. Left in the float
dtype: embedding tables (a frame gathers a few rows of them), norms and biases.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from flmjax.model.layers import SCALE_SUFFIX

QUANTIZE_CHOICES = ("none", "int8")
# What config.json records of an int8 export (HF-style: int8 `weight` + `weight_scale` [out, 1]).
INT8_CONFIG = {
    "quant_method": "flmjax_int8",
    "bits": 8,
    "weights": "int8, symmetric, per output channel (scale = absmax / 127)",
    "activations": "the compute dtype (weight-only)",
    "scale_name": "<weight name>_scale",
    "scale_dtype": "float32",
    "modules": ["model.layers.*.self_attn.*_proj", "model.layers.*.mlp.*_proj", "lm_head", "aud_output_layers.*"],
    "not_quantized": ["embeddings", "wtes", "wpe", "norms", "biases"],
}

# Contracted axes of each kernel, per layer (a scanned layer stack adds a leading layer axis).
CONTRACTED: dict[tuple[str, ...], tuple[int, ...]] = {
    ("backbone", "layers", "self_attn", "q_proj_kernel"): (0,),
    ("backbone", "layers", "self_attn", "k_proj_kernel"): (0,),
    ("backbone", "layers", "self_attn", "v_proj_kernel"): (0,),
    ("backbone", "layers", "self_attn", "o_proj_kernel"): (0, 1),
    ("backbone", "layers", "mlp", "gate_proj"): (0,),
    ("backbone", "layers", "mlp", "up_proj"): (0,),
    ("backbone", "layers", "mlp", "down_proj"): (0,),
    ("lm_head",): (0,),
    ("depformer", "linear_in"): (0,),
    ("depformer", "lm_heads"): (1,),
    ("depformer", "h", "c_attn_kernel"): (0,),
    ("depformer", "h", "c_proj_kernel"): (0, 1),
    ("depformer", "h", "mlps_gate_proj"): (1,),
    ("depformer", "h", "mlps_up_proj"): (1,),
    ("depformer", "h", "mlps_down_proj"): (1,),
}
STACKED = (("backbone", "layers"), ("depformer", "h"))


def contracted_axes(path: tuple[str, ...]) -> tuple[int, ...] | None:
    """The contracted axes of the stored (layer-stacked where scanned) kernel at `path`; None: not quantised."""
    axes = CONTRACTED.get(tuple(path))
    if axes is None:
        return None
    stacked = any(tuple(path[: len(p)]) == p for p in STACKED)
    return tuple(a + 1 for a in axes) if stacked else axes


@functools.partial(jax.jit, static_argnums=1)
def quantize_array(w: jax.Array, axes: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
    """Symmetric int8 with absmax scales over `axes` (kept as size-1 dims): w ~ q * scale."""
    w = jnp.asarray(w, jnp.float32)
    scale = jnp.abs(w).max(axis=axes, keepdims=True) / 127.0
    scale = jnp.where(scale > 0, scale, 1.0)  # an all-zero channel stays zero
    return jnp.clip(jnp.round(w / scale), -127, 127).astype(jnp.int8), scale


def quantize_params(params: dict, path: tuple[str, ...] = ()) -> dict:
    """A float params tree -> the same tree with int8 kernels and their `_scale` parameters."""
    out: dict = {}
    for key, value in params.items():
        here = path + (key,)
        if isinstance(value, dict):
            out[key] = quantize_params(value, here)
            continue
        axes = contracted_axes(here)
        if axes is None or key.endswith(SCALE_SUFFIX):
            out[key] = value
        elif jnp.dtype(value.dtype) == jnp.int8:
            raise ValueError(f"{'/'.join(here)} is int8 already")
        else:
            out[key], out[key + SCALE_SUFFIX] = quantize_array(value, axes)
    return out


def is_quantized(params: dict) -> bool:
    return any(
        str(getattr(p[-1], "key", "")).endswith(SCALE_SUFFIX) for p, _ in jax.tree_util.tree_leaves_with_path(params)
    )


def param_bytes(params: dict) -> int:
    return sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize for x in jax.tree_util.tree_leaves(params))
