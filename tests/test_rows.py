"""`select_rows`: the one per-stream selection of the decoder, the session and Mimi's streams."""

import jax.numpy as jnp
import numpy as np

from flmjax.rows import select_rows


def test_rows_of_new_where_the_mask_is_set_leaf_by_leaf():
    mask = jnp.array([True, False, True])
    old = {"a": jnp.arange(6).reshape(3, 2), "b": (jnp.zeros((3, 2, 2)), jnp.array([7, 8, 9]))}
    new = {"a": -jnp.arange(6).reshape(3, 2), "b": (jnp.ones((3, 2, 2)), -1)}  # a scalar leaf broadcasts
    out = select_rows(mask, new, old)
    np.testing.assert_array_equal(out["a"], [[0, -1], [2, 3], [-4, -5]])
    np.testing.assert_array_equal(out["b"][0][:, 0, 0], [1, 0, 1])
    np.testing.assert_array_equal(out["b"][1], [-1, 8, -1])
