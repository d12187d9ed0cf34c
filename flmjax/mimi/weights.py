"""Mimi parameters <-> kyutai's safetensors naming (`tokenizer-e351c8d8-checkpoint125.safetensors`).

`kyutai_layout` lists, for every Flax parameter, the kyutai tensor it comes from and how the layout
differs (PyTorch convs are [out, in, k], ours [k, in, out]; linears are transposed; ...). Codebooks are
stored by kyutai as EMA sums (`embedding_sum / cluster_usage`); we keep the normalised entries.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from typing import Any

import flax
import jax
import numpy as np

from flmjax.errors import FlmjaxError
from flmjax.mimi.config import MimiConfig

CODEBOOK_EPS = 1e-5  # kyutai clamps cluster_usage to this before dividing

# Older kyutai checkpoints name a few tensors differently (fused attention projections, EMA buffers).
ALIASES = {
    "self_attn.in_projs.0.weight": ("self_attn.in_proj_weight", "self_attn.in_proj.weight"),
    "self_attn.out_projs.0.weight": ("self_attn.out_proj.weight",),
    "_codebook.embedding_sum": ("_codebook.embed_avg", "_codebook.embed_sum"),
    "_codebook.cluster_usage": ("_codebook.cluster_size",),
}

# kind -> (kyutai array -> ours, ours -> kyutai array)
_LAYOUTS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]] = {
    "plain": (lambda w: w, lambda w: w),
    "conv": (lambda w: w.transpose(2, 1, 0), lambda w: w.transpose(2, 1, 0)),  # [out, in, k] <-> [k, in, out]
    "convtr": (lambda w: w.transpose(0, 2, 1), lambda w: w.transpose(0, 2, 1)),  # [in, out, k] <-> [in, k, out]
    "depthwise_convtr": (lambda w: w[:, 0, :].T, lambda w: w.T[:, None, :]),  # [c, 1, k] <-> [k, c]
    "linear": (lambda w: w.T, lambda w: w.T),  # [out, in] <-> [in, out]
    "projection": (lambda w: w[:, :, 0].T, lambda w: w.T[:, :, None]),  # 1x1 conv [out, in, 1] <-> [in, out]
}


RANDOM_CODEBOOK_STD = 0.01  # random codebooks must differ, or every latent maps to code 0


class MimiWeightsError(FlmjaxError):
    """A weights file that is not a (complete, well-shaped) kyutai Mimi checkpoint."""


@dataclasses.dataclass(frozen=True)
class Entry:
    path: tuple[str, ...]  # Flax parameter path
    name: str  # kyutai tensor name
    kind: str  # how kyutai's layout differs from ours (key of _LAYOUTS)
    shape: tuple[int, ...]  # our shape
    init: tuple[str, float]  # what `random_params` draws: ("uniform", bound) or ("constant", value)


@dataclasses.dataclass(frozen=True)
class CodebookEntry:
    path: tuple[str, ...]  # Flax [codebook_size, codebook_dim] parameter
    prefix: str  # kyutai `..._codebook` prefix (its entries are embedding_sum / cluster_usage)
    shape: tuple[int, int]


def _fan_in(n: int) -> tuple[str, float]:
    """PyTorch's default for convolutions and linears: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    return ("uniform", 1.0 / math.sqrt(n))


def kyutai_layout(config: MimiConfig, n_q: int) -> tuple[list[Entry], list[CodebookEntry]]:
    """Every tensor of a Mimi using `n_q` codebooks: our path and shape, kyutai's name and layout, its
    random initialisation. (kyutai files hold 32 codebooks; the unused ones are left out.)"""
    c = config
    entries: list[Entry] = []

    def conv(path: tuple[str, ...], name: str, cin: int, cout: int, k: int) -> None:
        init = _fan_in(cin * k)
        entries.append(Entry(path + ("kernel",), f"{name}.conv.conv.weight", "conv", (k, cin, cout), init))
        entries.append(Entry(path + ("bias",), f"{name}.conv.conv.bias", "plain", (cout,), init))

    def convtr(path: tuple[str, ...], name: str, cin: int, cout: int, k: int) -> None:
        init = _fan_in(cout * k)  # PyTorch counts a transposed conv's fan-in on its output side
        entries.append(Entry(path + ("kernel",), f"{name}.convtr.convtr.weight", "convtr", (cin, k, cout), init))
        entries.append(Entry(path + ("bias",), f"{name}.convtr.convtr.bias", "plain", (cout,), init))

    def residual(path: tuple[str, ...], name: str, channels: int) -> None:
        hidden = channels // c.compress
        conv(path + ("conv_in",), f"{name}.block.1", channels, hidden, c.residual_kernel_size)
        conv(path + ("conv_out",), f"{name}.block.3", hidden, channels, 1)

    # SEANet: kyutai's nn.Sequential index of each layer (ELUs take indices too).
    n = len(c.ratios)
    top = c.n_filters * 2**n
    conv(("encoder", "input_conv"), "encoder.model.0", 1, c.n_filters, c.kernel_size)
    conv(("decoder", "input_conv"), "decoder.model.0", c.dimension, top, c.kernel_size)
    for i, (up, down) in enumerate(zip(c.ratios, reversed(c.ratios))):
        channels = c.n_filters * 2**i
        residual(("encoder", f"stages_{i}", "residual"), f"encoder.model.{1 + 3 * i}", channels)
        conv(("encoder", f"stages_{i}", "strided_conv"), f"encoder.model.{3 + 3 * i}", channels, 2 * channels, 2 * down)
        channels = top // 2**i
        convtr(
            ("decoder", f"stages_{i}", "transposed_conv"), f"decoder.model.{2 + 3 * i}", channels, channels // 2, 2 * up
        )
        residual(("decoder", f"stages_{i}", "residual"), f"decoder.model.{3 + 3 * i}", channels // 2)
    conv(("encoder", "output_conv"), f"encoder.model.{3 * n + 2}", top, c.dimension, c.last_kernel_size)
    conv(("decoder", "output_conv"), f"decoder.model.{3 * n + 2}", c.n_filters, 1, c.last_kernel_size)

    d, ff = c.dimension, c.dim_feedforward
    for side in ("encoder_transformer", "decoder_transformer"):
        for layer in range(c.num_layers):
            path, name = (side, f"layers_{layer}"), f"{side}.transformer.layers.{layer}"
            for ours, theirs, kind, shape, init in (
                ("in_proj", "self_attn.in_projs.0.weight", "linear", (d, 3 * d), _fan_in(d)),
                ("out_proj", "self_attn.out_projs.0.weight", "linear", (d, d), _fan_in(d)),
                ("linear1", "linear1.weight", "linear", (d, ff), _fan_in(d)),
                ("linear2", "linear2.weight", "linear", (ff, d), _fan_in(ff)),
                ("layer_scale_1", "layer_scale_1.scale", "plain", (d,), ("constant", c.layer_scale_init)),
                ("layer_scale_2", "layer_scale_2.scale", "plain", (d,), ("constant", c.layer_scale_init)),
            ):
                entries.append(Entry(path + (ours,), f"{name}.{theirs}", kind, shape, init))
            for norm in ("norm1", "norm2"):
                entries.append(Entry(path + (norm, "scale"), f"{name}.{norm}.weight", "plain", (d,), ("constant", 1.0)))
                entries.append(Entry(path + (norm, "bias"), f"{name}.{norm}.bias", "plain", (d,), ("constant", 0.0)))

    k = 2 * c.resample_stride
    entries.append(
        Entry(("downsample", "kernel"), "downsample.conv.conv.conv.weight", "conv", (k, d, d), _fan_in(d * k))
    )
    entries.append(
        Entry(("upsample", "kernel"), "upsample.convtr.convtr.convtr.weight", "depthwise_convtr", (k, d), _fan_in(k))
    )

    codebooks: list[CodebookEntry] = []
    q = c.codebook_dim
    branches = (("semantic", "rvq_first", c.n_q_semantic), ("acoustic", "rvq_rest", n_q - c.n_q_semantic))
    for ours, theirs, count in branches:
        if count == 0:
            continue
        path, name = ("quantizer", ours), f"quantizer.{theirs}"
        entries.append(Entry(path + ("input_proj",), f"{name}.input_proj.weight", "projection", (d, q), _fan_in(d)))
        entries.append(Entry(path + ("output_proj",), f"{name}.output_proj.weight", "projection", (q, d), _fan_in(q)))
        for i in range(count):
            codebooks.append(
                CodebookEntry(path + (f"codebook_{i}",), f"{name}.vq.layers.{i}._codebook", (c.codebook_size, q))
            )
    return entries, codebooks


def check_params(params: dict[str, Any], config: MimiConfig, n_q: int) -> None:
    """Raise a ValueError naming the first parameter missing, extra or mis-shaped for (config, n_q)."""
    entries, codebooks = kyutai_layout(config, n_q)
    expected = {e.path: e.shape for e in entries} | {cb.path: cb.shape for cb in codebooks}
    got = {path: tuple(leaf.shape) for path, leaf in flax.traverse_util.flatten_dict(params).items()}
    for path in sorted(expected.keys() | got.keys()):
        if expected.get(path) != got.get(path):
            raise ValueError(
                f"Mimi parameter {'/'.join(path)}: expected shape {expected.get(path)}, got {got.get(path)} "
                f"(params built for another n_q or config? this Mimi has n_q={n_q})"
            )


def random_params(config: MimiConfig, n_q: int, seed: int = 0) -> dict[str, Any]:
    """Random parameters: PyTorch-like fan-in scales, unit norms, layer scale 0.01, N(0, 0.01) codebooks.

    Drawn with numpy (well under a second); drawing them with jax.random costs tens of seconds of XLA
    compilation on CPU.
    """
    rng = np.random.default_rng(seed)
    entries, codebooks = kyutai_layout(config, n_q)
    flat: dict[tuple[str, ...], np.ndarray] = {}
    for e in entries:
        how, value = e.init
        if how == "uniform":
            flat[e.path] = (rng.random(e.shape, dtype=np.float32) * 2 - 1) * np.float32(value)
        else:
            flat[e.path] = np.full(e.shape, value, np.float32)
    for cb in codebooks:
        flat[cb.path] = rng.standard_normal(cb.shape, dtype=np.float32) * np.float32(RANDOM_CODEBOOK_STD)
    return jax.device_put(flax.traverse_util.unflatten_dict(flat))


def _open(path: str | os.PathLike) -> Any:
    from safetensors import SafetensorError, safe_open

    if not os.path.isfile(path):
        raise FileNotFoundError(f"Mimi weights file not found: {path}")
    try:
        return safe_open(os.fspath(path), framework="numpy")
    except (SafetensorError, OSError, ValueError) as err:
        raise MimiWeightsError(f"{path} is not a readable safetensors file: {err}") from None


def load_kyutai(path: str | os.PathLike, config: MimiConfig, n_q: int) -> dict[str, Any]:
    """Read a kyutai Mimi safetensors file (its first `n_q` codebooks) into our parameter tree (float32)."""
    entries, codebooks = kyutai_layout(config, n_q)
    with _open(path) as f:
        available = set(f.keys())

        def resolve(name: str) -> str | None:
            if name in available:
                return name
            for suffix, olds in ALIASES.items():
                if name.endswith(suffix):
                    for old in olds:
                        if (candidate := name[: -len(suffix)] + old) in available:
                            return candidate
            return None

        wanted = [e.name for e in entries] + [
            f"{cb.prefix}.{b}" for cb in codebooks for b in ("embedding_sum", "cluster_usage")
        ]
        missing = [name for name in wanted if resolve(name) is None]
        if len(missing) == len(wanted):
            raise MimiWeightsError(
                f"{path} is not a kyutai Mimi checkpoint (it has none of its tensors, e.g. {wanted[0]!r})"
            )
        if missing:
            raise MimiWeightsError(f"{path} lacks {len(missing)} Mimi tensor(s), the first being {missing[0]!r}")

        def read(name: str, expected: tuple[int, ...]) -> np.ndarray:
            stored = resolve(name)
            array = f.get_tensor(stored)
            if array.shape != expected:
                raise MimiWeightsError(f"{path}: tensor {stored!r} has shape {array.shape}, expected {expected}")
            return array.astype(np.float32)

        flat: dict[tuple[str, ...], np.ndarray] = {}
        for e in entries:
            to_ours, to_theirs = _LAYOUTS[e.kind]
            flat[e.path] = np.ascontiguousarray(to_ours(read(e.name, to_theirs(np.empty(e.shape, np.float32)).shape)))
        for cb in codebooks:
            embedding_sum = read(f"{cb.prefix}.embedding_sum", cb.shape)
            usage = read(f"{cb.prefix}.cluster_usage", cb.shape[:1])
            flat[cb.path] = embedding_sum / np.maximum(usage, CODEBOOK_EPS)[:, None]
    return jax.device_put(flax.traverse_util.unflatten_dict(flat))


def save_kyutai(params: dict[str, Any], path: str | os.PathLike, config: MimiConfig, n_q: int) -> None:
    """Write parameters under kyutai's names: all but the unused codebooks of a kyutai file (a model with
    n_q = 32 writes a file that `moshi.models.loaders.get_mimi` loads)."""
    from safetensors.numpy import save_file

    flat = flax.traverse_util.flatten_dict(jax.device_get(params))
    entries, codebooks = kyutai_layout(config, n_q)
    tensors = {e.name: np.ascontiguousarray(_LAYOUTS[e.kind][1](np.asarray(flat[e.path], np.float32))) for e in entries}
    for cb in codebooks:
        embedding = np.asarray(flat[cb.path], np.float32)
        tensors[f"{cb.prefix}.embedding_sum"] = np.ascontiguousarray(embedding)
        tensors[f"{cb.prefix}.cluster_usage"] = np.ones(cb.shape[0], np.float32)
        tensors[f"{cb.prefix}._initialized"] = np.ones(1, np.float32)
    save_file(tensors, os.fspath(path))
