"""Per-row selection in batched state: each row of a batch is one stream (a conversation, a Mimi stream)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def select_rows(mask: jax.Array, new: Any, old: Any) -> Any:
    """`new` in the rows where mask [B] (bool) is set, `old` elsewhere, leaf by leaf of two alike pytrees
    whose leaves are [B, ...]; a leaf of `new` may be a scalar (broadcast to every selected row)."""

    def pick(n: Any, o: jax.Array) -> jax.Array:
        return jnp.where(mask.reshape(mask.shape + (1,) * (o.ndim - 1)), n, o)

    return jax.tree.map(pick, new, old)
