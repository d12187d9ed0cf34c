"""Logical axis names and the one table that maps them onto the device mesh (`data`, `fsdp`, `tensor`).

Model code annotates every weight and activation with logical names only; which mesh axis carries
which name is decided here, so a new mesh layout is a change to this table and nothing else.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

# (logical name, mesh axes). Weights are split over `fsdp` on their model dimension and over `tensor`
# on heads / MLP / vocabulary; activations keep their batch on (`data`, `fsdp`).
LOGICAL_AXIS_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    # activations
    ("activation_batch", ("data", "fsdp")),
    ("activation_length", None),
    ("activation_embed", None),
    ("activation_heads", "tensor"),
    ("activation_kv_heads", "tensor"),
    ("activation_mlp", "tensor"),
    ("activation_vocab", "tensor"),
    ("activation_codebooks", None),
    # backbone weights
    ("layers", None),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("q_heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("mlp", "tensor"),
    ("norm", None),
    # audio tables and depformer weights
    ("codebooks", None),
    ("audio_vocab", None),
    ("dep_embed", "fsdp"),
    ("dep_heads", "tensor"),
    ("dep_mlp", "tensor"),
    ("qkv", None),
)


def check_rules(rules: Sequence[tuple[str, str | tuple[str, ...] | None]] = LOGICAL_AXIS_RULES) -> None:
    """Fail loudly on a rule table that names a logical axis twice or an unknown mesh axis."""
    seen: set[str] = set()
    for name, mesh_axes in rules:
        if name in seen:
            raise ValueError(f"logical axis {name!r} has two rules")
        seen.add(name)
        axes = (mesh_axes,) if isinstance(mesh_axes, str) else (mesh_axes or ())
        unknown = [a for a in axes if a not in MESH_AXES]
        if unknown:
            raise ValueError(f"logical axis {name!r} maps to unknown mesh axes {unknown}")


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A (data, fsdp, tensor) mesh over `devices` (all by default); one size may be -1 (the rest)."""
    devices = list(jax.devices() if devices is None else devices)
    sizes = [data, fsdp, tensor]
    if sizes.count(-1) > 1:
        raise ValueError("at most one mesh axis size may be -1")
    known = int(np.prod([s for s in sizes if s != -1]))
    if -1 in sizes:
        if len(devices) % known:
            raise ValueError(f"{len(devices)} devices cannot be split into mesh {sizes}")
        sizes[sizes.index(-1)] = len(devices) // known
    if int(np.prod(sizes)) != len(devices):
        raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))} needs {int(np.prod(sizes))} devices, have {len(devices)}")
    return Mesh(np.asarray(devices).reshape(sizes), MESH_AXES)


def fit_sharding(sharding: NamedSharding, shape: tuple[int, ...]) -> NamedSharding:
    """Drop the mesh axes of any dimension they do not divide (e.g. 4 KV heads on an 8-way `tensor`
    axis): that dimension is replicated instead of split unevenly."""
    spec = list(sharding.spec) + [None] * (len(shape) - len(sharding.spec))
    for i, axes in enumerate(spec):
        names = (axes,) if isinstance(axes, str) else (axes or ())
        if shape[i] % int(np.prod([sharding.mesh.shape[a] for a in names])):
            spec[i] = None
    return NamedSharding(sharding.mesh, PartitionSpec(*spec))


def logical_to_mesh_sharding(tree, mesh: Mesh, rules=LOGICAL_AXIS_RULES):
    """Map a pytree of logical PartitionSpecs (from `nn.get_partition_spec`) to NamedShardings."""
    check_rules(rules)
    return nn.logical_to_mesh_sharding(tree, mesh, rules)


@contextlib.contextmanager
def activation_sharding(mesh: Mesh, rules=LOGICAL_AXIS_RULES) -> Iterator[None]:
    """Make the model's logical activation constraints effective: enter it inside a jitted function,
    while it is traced. (Since JAX 0.7 `with mesh:` no longer sets the mesh constraints read, and
    `jax.set_mesh` cannot be entered under `jit`; without a mesh they are silently no-ops.)"""
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh), nn.logical_axis_rules(rules):
        yield
