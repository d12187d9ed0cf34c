"""Per-chip peaks of the accelerators the AOT reports are made for (one table, one source).

TPU values: the Google Cloud TPU system-architecture pages (cloud.google.com/tpu/docs/v4, v5e, v5p,
v6e): dense bf16 peak FLOP/s per chip, HBM capacity and bandwidth per chip. H100: NVIDIA's H100 SXM
datasheet (989 TFLOP/s dense bf16, 80 GB HBM3, 3.35 TB/s); it is compiled for through the CUDA plugin
with the target config `h100_sxm.txtpb` (no GPU needed).
"""

from __future__ import annotations

import dataclasses
from importlib import resources


@dataclasses.dataclass(frozen=True)
class Chip:
    name: str
    bf16_flops: float  # peak FLOP/s per chip
    hbm_bytes: float
    hbm_bytes_per_s: float


CHIPS: dict[str, Chip] = {
    "v4": Chip("TPU v4", 275e12, 32 * 2**30, 1200e9),
    "v5e": Chip("TPU v5e", 197e12, 16e9, 819e9),
    "v5p": Chip("TPU v5p", 459e12, 95e9, 2765e9),
    "v6e": Chip("TPU v6e", 918e12, 32e9, 1640e9),
    "h100": Chip("H100 SXM", 989e12, 80e9, 3350e9),
}
GPUS = ("h100",)


def chip_of_topology(topology: str) -> Chip:
    """The chip of a topology name such as `v5p:2x2x2` or `h100:8` (the part before the colon)."""
    generation = topology.split(":")[0].lower()
    if generation not in CHIPS:
        raise ValueError(f"unknown TPU generation {generation!r} in {topology!r}; known: {', '.join(CHIPS)}")
    return CHIPS[generation]


def topology_devices(topology: str) -> list:
    """The devices of a TPU slice (`v5p:2x2x2`, from libtpu) or of `h100:N` GPUs in one host (from the
    CUDA plugin, `pip install jax-cuda12-plugin jax-cuda12-pjrt` at jax's version), without the hardware."""
    from jax.experimental import topologies

    generation, _, shape = topology.partition(":")
    if generation.lower() not in GPUS:
        # libtpu's default host is 2x2x1 chips; a slice smaller than that (v6e:1x1, v5e:1x2) is one host
        # of the slice's own shape, or libtpu refuses it ("not divisible by chips_per_host_bounds").
        try:
            dims = [int(d) for d in shape.lower().split("x")]
        except ValueError:
            raise ValueError(f"{topology}: the slice shape must be like 2x2 or 2x2x1") from None
        dims = (dims + [1, 1, 1])[:3]
        kwargs = {"chips_per_host_bounds": dims} if dims[0] < 2 or dims[1] < 2 else {}
        return topologies.get_topology_desc(platform="tpu", topology_name=topology, **kwargs).devices
    try:
        import jax_plugins.xla_cuda12  # noqa: F401
    except ImportError:
        raise ValueError(f"{topology}: needs the CUDA plugin (pip install jax-cuda12-plugin jax-cuda12-pjrt)") from None
    config = (resources.files("flmjax.aot") / "h100_sxm.txtpb").read_text()
    return topologies.get_topology_desc(platform="cuda", target_config=config, topology=f"1x1x{int(shape)}").devices
