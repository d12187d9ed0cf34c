"""Per-chip peaks of the accelerators the AOT reports are made for (one table, one source).

TPU values: the Google Cloud TPU system-architecture pages (cloud.google.com/tpu/docs/v4, v5e, v5p,
v6e): dense bf16 peak FLOP/s per chip, HBM capacity and bandwidth per chip.
"""

from __future__ import annotations

import dataclasses


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
}


def chip_of_topology(topology: str) -> Chip:
    """The chip of a topology name such as `v5p:2x2x2` (the part before the colon)."""
    generation = topology.split(":")[0].lower()
    if generation not in CHIPS:
        raise ValueError(f"unknown TPU generation {generation!r} in {topology!r}; known: {', '.join(CHIPS)}")
    return CHIPS[generation]
