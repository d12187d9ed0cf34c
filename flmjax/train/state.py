"""The train state (step, fp32 parameters, optimizer state) and where each of its arrays lives on the mesh.

Shapes come first, without memory (`jax.eval_shape`); shardings follow from the parameters' logical
axes through `flmjax.sharding`; the state is then created directly in place (a jitted init with
`out_shardings`) or restored into those shardings by Orbax, which is how a checkpoint moves to a new mesh.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from flmjax.config import ModelConfig
from flmjax.model.flm_audio import FLMAudioLM
from flmjax.model.pretrained import abstract_params, logical_param_specs
from flmjax.sharding import LOGICAL_AXIS_RULES, fit_sharding, logical_to_mesh_sharding


class TrainState(struct.PyTreeNode):
    step: jax.Array  # int32 scalar: optimizer updates made so far
    params: Any
    opt_state: Any


def param_shardings(config: ModelConfig, mesh: Mesh) -> dict:
    """A NamedSharding for every parameter, from its logical axes and `LOGICAL_AXIS_RULES`."""
    shardings = logical_to_mesh_sharding(logical_param_specs(config), mesh, LOGICAL_AXIS_RULES)
    return jax.tree_util.tree_map(lambda s, a: fit_sharding(s, a.shape), shardings, abstract_params(config))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Every batch field (tokens/weights [B, T+1, 17], DPO's per-pair [B]): the batch dimension split
    over the activation batch axes, the rest whole."""
    return logical_to_mesh_sharding(PartitionSpec("activation_batch"), mesh, LOGICAL_AXIS_RULES)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def state_shardings(config: ModelConfig, optimizer: optax.GradientTransformation, mesh: Mesh) -> TrainState:
    """The sharding of every array of the train state: optimizer moments follow their parameters."""
    params = param_shardings(config, mesh)
    opt_shapes = jax.eval_shape(optimizer.init, abstract_params(config))
    opt = optax.tree_map_params(
        optimizer, lambda _, sharding: sharding, opt_shapes, params, transform_non_params=lambda _: replicated(mesh)
    )
    return TrainState(step=replicated(mesh), params=params, opt_state=opt)


def abstract_state(config: ModelConfig, optimizer: optax.GradientTransformation, mesh: Mesh) -> TrainState:
    """ShapeDtypeStructs (with shardings) of the whole train state: a restore target, an AOT input."""
    params = abstract_params(config)
    shapes = TrainState(
        step=jax.ShapeDtypeStruct((), jnp.int32), params=params, opt_state=jax.eval_shape(optimizer.init, params)
    )
    return jax.tree_util.tree_map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
        shapes,
        state_shardings(config, optimizer, mesh),
    )


def random_state(config: ModelConfig, optimizer: optax.GradientTransformation, mesh: Mesh, seed: int) -> TrainState:
    """Fresh parameters and optimizer state, each array created on its own shards."""
    module = FLMAudioLM(config)
    example = jnp.broadcast_to(jnp.asarray(config.tokens.initial_column), (1, 2, config.tokens.num_streams))

    def init(key):
        params = nn.unbox(module.init(key, example))["params"]
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params))

    return jax.jit(init, out_shardings=state_shardings(config, optimizer, mesh))(jax.random.PRNGKey(seed))


def state_from_params(
    params: Any, config: ModelConfig, optimizer: optax.GradientTransformation, mesh: Mesh
) -> TrainState:
    """Step 0 with a fresh optimizer around given parameters (host arrays, or device arrays anywhere)."""
    shardings = state_shardings(config, optimizer, mesh)
    params = jax.tree_util.tree_map(
        lambda p, a, s: jax.device_put(np.asarray(p, a.dtype) if isinstance(p, np.ndarray) else p.astype(a.dtype), s),
        params,
        abstract_params(config),
        shardings.params,
    )
    init = lambda p: TrainState(step=jnp.zeros((), jnp.int32), params=p, opt_state=optimizer.init(p))  # noqa: E731
    return jax.jit(init, in_shardings=(shardings.params,), out_shardings=shardings)(params)
