"""The release's HF checkpoint layout <-> flmjax parameters, as one table of names plus transposes.

Every HF tensor maps to a slice of one flmjax parameter (`index` picks the layer / codebook of a stacked
parameter). PyTorch linears are [out, in]; flmjax kernels are [in, ...out] with heads split out, so a
linear converts by transposing and reshaping (row-major order is the same on both sides).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from flmjax.config import ModelConfig
from flmjax.errors import FlmjaxError
from flmjax.interop.safetensors_io import SafetensorsError, iter_checkpoint_files, write_safetensors
from flmjax.model.layers import SCALE_SUFFIX
from flmjax.model.quant import INT8_CONFIG, contracted_axes, is_quantized


class CheckpointMismatchError(FlmjaxError):
    """A checkpoint whose tensors do not match the model its config describes."""


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    hf_name: str
    hf_shape: tuple[int, ...]
    path: tuple[str, ...]  # flmjax parameter path under `params`
    index: tuple[int, ...]  # leading indices into a stacked parameter
    linear: bool  # a PyTorch [out, in] weight: transpose on the way in and out

    def from_hf(self, tensor: np.ndarray, slice_shape: tuple[int, ...]) -> np.ndarray:
        return (tensor.T if self.linear else tensor).reshape(slice_shape)

    def to_hf(self, value: np.ndarray) -> np.ndarray:
        if self.linear:
            return value.reshape(self.hf_shape[::-1]).T
        return value.reshape(self.hf_shape)


def tensor_specs(cfg: ModelConfig) -> list[TensorSpec]:
    """Every tensor of the release's layout for `cfg`, in the release's order."""
    e, v, a, n = cfg.hidden_size, cfg.vocab_size, cfg.audio_vocab_size, cfg.num_codebooks
    h, kvh, hd, f = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.intermediate_size
    dep = cfg.depformer
    specs: list[TensorSpec] = []

    def add(name, shape, path, index=(), linear=False):
        specs.append(TensorSpec(name, tuple(shape), tuple(path), tuple(index), linear))

    emb = ("embed_tokens",)
    add("model.embed_tokens.text_embeddings.weight", (v, e), emb + ("text_embeddings",))
    for kind in ("speak", "listen"):
        for c in range(n):
            add(f"model.embed_tokens.aud_{kind}_embeddings.{c}.weight", (a, e), emb + (f"aud_{kind}_embeddings",), (c,))
    layers = ("backbone", "layers")
    for i in range(cfg.num_layers):
        pre = f"model.layers.{i}."
        add(pre + "input_layernorm.weight", (e,), layers + ("input_layernorm", "weight"), (i,))
        for proj, heads in (("q", h), ("k", kvh), ("v", kvh)):
            add(
                pre + f"self_attn.{proj}_proj.weight",
                (heads * hd, e),
                layers + ("self_attn", f"{proj}_proj_kernel"),
                (i,),
                True,
            )
            if cfg.qkv_bias:
                add(
                    pre + f"self_attn.{proj}_proj.bias",
                    (heads * hd,),
                    layers + ("self_attn", f"{proj}_proj_bias"),
                    (i,),
                )
        add(pre + "self_attn.o_proj.weight", (e, h * hd), layers + ("self_attn", "o_proj_kernel"), (i,), True)
        if cfg.o_bias:
            add(pre + "self_attn.o_proj.bias", (e,), layers + ("self_attn", "o_proj_bias"), (i,))
        add(pre + "post_attention_layernorm.weight", (e,), layers + ("post_attention_layernorm", "weight"), (i,))
        add(pre + "mlp.gate_proj.weight", (f, e), layers + ("mlp", "gate_proj"), (i,), True)
        add(pre + "mlp.up_proj.weight", (f, e), layers + ("mlp", "up_proj"), (i,), True)
        add(pre + "mlp.down_proj.weight", (e, f), layers + ("mlp", "down_proj"), (i,), True)
    add("model.norm.weight", (e,), ("backbone", "norm", "weight"))
    add("lm_head.weight", (v, e), ("lm_head",), (), True)

    d, fd = dep.dim, dep.mlp_dim
    pre = "aud_output_layers."
    add(pre + "linear_in.weight", (n * d, e), ("depformer", "linear_in"), (), True)
    for c in range(n):
        add(pre + f"transformer.wtes.{c}.weight", (a, d), ("depformer", "wtes"), (c,))
    add(pre + "transformer.wpe.weight", (n, d), ("depformer", "wpe"))
    blocks = ("depformer", "h")
    for i in range(dep.num_layers):
        b = pre + f"transformer.h.{i}."
        add(b + "ln_1.weight", (d,), blocks + ("ln_1", "weight"), (i,))
        add(b + "attn.c_attn.weight", (3 * d, d), blocks + ("c_attn_kernel",), (i,), True)
        add(b + "attn.c_proj.weight", (d, d), blocks + ("c_proj_kernel",), (i,), True)
        add(b + "ln_2.weight", (d,), blocks + ("ln_2", "weight"), (i,))
        for c in range(n):
            add(b + f"mlps.{c}.gate_proj.weight", (fd, d), blocks + ("mlps_gate_proj",), (i, c), True)
            add(b + f"mlps.{c}.up_proj.weight", (fd, d), blocks + ("mlps_up_proj",), (i, c), True)
            add(b + f"mlps.{c}.down_proj.weight", (d, fd), blocks + ("mlps_down_proj",), (i, c), True)
    add(pre + "transformer.ln_f.weight", (d,), ("depformer", "ln_f", "weight"))
    for c in range(n):
        add(pre + f"lm_heads.{c}.weight", (a, d), ("depformer", "lm_heads"), (c,), True)
    return specs


def _get(tree: dict, path: tuple[str, ...]) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def _scale_path(path: tuple[str, ...]) -> tuple[str, ...]:
    return path[:-1] + (path[-1] + SCALE_SUFFIX,)


@dataclasses.dataclass(frozen=True)
class _Entry:
    """One tensor of the file: a spec's weight, or (`scale`) the scales of an int8 linear weight, which
    HF-style quantised layouts store as `<name>_scale` [out, 1] beside the int8 `<name>` [out, in]."""

    spec: TensorSpec
    scale: bool = False

    @property
    def name(self) -> str:
        return self.spec.hf_name + SCALE_SUFFIX if self.scale else self.spec.hf_name

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.spec.hf_shape[0], 1) if self.scale else self.spec.hf_shape

    @property
    def path(self) -> tuple[str, ...]:
        return _scale_path(self.spec.path) if self.scale else self.spec.path

    def from_hf(self, tensor: np.ndarray, slice_shape: tuple[int, ...]) -> np.ndarray:
        return tensor.reshape(slice_shape) if self.scale else self.spec.from_hf(tensor, slice_shape)

    def to_hf(self, value: np.ndarray) -> np.ndarray:
        return value.reshape(self.shape) if self.scale else self.spec.to_hf(value)


def file_entries(cfg: ModelConfig, quantized: bool) -> list[_Entry]:
    """The tensors of a checkpoint: the release's, plus with `quantized` the scales of the int8 kernels."""
    entries = []
    for spec in tensor_specs(cfg):
        entries.append(_Entry(spec))
        if quantized and contracted_axes(spec.path) is not None:
            entries.append(_Entry(spec, scale=True))
    return entries


def checkpoint_quantization(directory: str | os.PathLike) -> str:
    """ "int8" for a checkpoint export wrote with `quantize="int8"`, else "none"."""
    with open(os.path.join(directory, "config.json")) as f:
        method = json.load(f).get("quantization_config", {}).get("quant_method")
    if method is None:
        return "none"
    if method != INT8_CONFIG["quant_method"]:
        raise CheckpointMismatchError(
            f"{directory}/config.json: quantization_config.quant_method {method!r} is unknown"
        )
    return "int8"


def load_hf_params(
    directory: str | os.PathLike, cfg: ModelConfig, param_shapes: dict, dtype: np.dtype, quantized: bool = False
) -> dict:
    """Read an HF checkpoint into numpy parameter buffers shaped like `param_shapes` (a params tree of
    ShapeDtypeStructs, e.g. from `jax.eval_shape`). Tensors stream in one at a time from memory maps.
    A `quantized` checkpoint's kernels stay int8, with their fp32 `_scale` parameters beside them."""
    specs = {e.name: e for e in file_entries(cfg, quantized)}
    buffers = {}

    def buffer(entry: _Entry):
        if entry.path not in buffers:
            shape = _get(param_shapes, entry.spec.path).shape
            axes = contracted_axes(entry.spec.path) if quantized else None
            if axes is None:
                buffers[entry.path] = np.empty(shape, dtype)
            elif entry.scale:
                buffers[entry.path] = np.empty([1 if i in axes else n for i, n in enumerate(shape)], np.float32)
            else:
                buffers[entry.path] = np.empty(shape, np.int8)
        return buffers[entry.path]

    seen: set[str] = set()
    unexpected: list[str] = []
    try:
        for file in iter_checkpoint_files(directory):
            for name in file.keys():
                spec = specs.get(name)
                if spec is None:
                    unexpected.append(name)
                    continue
                if file.shape(name) != spec.shape:
                    raise CheckpointMismatchError(
                        f"{directory}: tensor {name} has shape {file.shape(name)}, the config implies {spec.shape}"
                    )
                target = buffer(spec)
                index = spec.spec.index
                target[index] = spec.from_hf(file.tensor(name), target.shape[len(index) :]).astype(target.dtype)
                seen.add(name)
    except SafetensorsError as e:
        raise CheckpointMismatchError(str(e)) from None
    missing = [n for n in specs if n not in seen]
    if missing:
        more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
        raise CheckpointMismatchError(f"{directory}: missing tensor {', '.join(missing[:3])}{more}")
    if unexpected:
        more = f" (and {len(unexpected) - 3} more)" if len(unexpected) > 3 else ""
        raise CheckpointMismatchError(f"{directory}: unexpected tensor {', '.join(unexpected[:3])}{more}")
    tree: dict = {}
    for path, array in buffers.items():
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = array
    return tree


def _shard_plan(entries: list[_Entry], itemsize, max_shard_bytes: int) -> list[list[_Entry]]:
    shards: list[list[_Entry]] = [[]]
    size = 0
    for spec in entries:
        nbytes = int(np.prod(spec.shape)) * itemsize(spec)
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(spec)
        size += nbytes
    return shards


def save_hf_params(
    directory: str | os.PathLike,
    cfg: ModelConfig,
    params: dict,
    dtype: np.dtype,
    max_shard_bytes: int = 5 * 2**30,
) -> None:
    """Write `params` (a tree of arrays; device arrays are fetched one slice at a time) in the release's
    layout: config.json plus `model.safetensors`, or shards and `model.safetensors.index.json`.

    Params holding int8 kernels (flmjax.model.quant) are written in the int8 layout: each such weight
    int8 [out, in] with its fp32 `<name>_scale` [out, 1]; the other tensors in `dtype`; config.json
    records it under `quantization_config`."""
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    quantized = is_quantized(params)
    all_entries = file_entries(cfg, quantized)
    dtype = np.dtype(dtype)

    def entry_dtype(entry: _Entry) -> np.dtype:
        if quantized and contracted_axes(entry.spec.path) is not None:
            return np.dtype(np.float32) if entry.scale else np.dtype(np.int8)
        return dtype

    shards = _shard_plan(all_entries, lambda e: entry_dtype(e).itemsize, max_shard_bytes)
    by_name = {e.name: e for e in all_entries}

    def produce(name: str) -> np.ndarray:
        entry = by_name[name]
        value, index = _get(params, entry.path), entry.spec.index
        return entry.to_hf(np.asarray(value[index] if index else value)).astype(entry_dtype(entry))

    def entries(shard: list[_Entry]) -> Iterator[tuple[str, tuple[int, ...], np.dtype]]:
        return ((e.name, e.shape, entry_dtype(e)) for e in shard)

    # Remove a previous export's files first so a single-file and a sharded layout never coexist.
    for old in os.listdir(directory):
        if old.startswith("model") and (old.endswith(".safetensors") or old.endswith(".index.json")):
            os.remove(os.path.join(directory, old))
    if len(shards) == 1:
        write_safetensors(os.path.join(directory, "model.safetensors"), entries(shards[0]), produce)
    else:
        weight_map, total = {}, 0
        for i, shard in enumerate(shards):
            fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            total += write_safetensors(os.path.join(directory, fname), entries(shard), produce)
            weight_map.update({e.name: fname for e in shard})
        with open(os.path.join(directory, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    hf_config = cfg.to_hf_dict()
    hf_config["torch_dtype"] = {"bfloat16": "bfloat16", "float32": "float32", "float16": "float16"}[str(dtype)]
    if quantized:
        hf_config["quantization_config"] = INT8_CONFIG
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(hf_config, f, indent=2)
