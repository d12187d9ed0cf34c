"""The train state (step, fp32 parameters, optimizer state) and where each of its arrays lives on the mesh.

With LoRA (`ModelConfig.lora`) the trained parameters are the adapters (fp32, with their optimizer
state) and the base weights ride along as `frozen`, in the compute dtype, without optimizer state;
checkpoints hold the trained parameters only.

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
from flmjax.model import lora as lora_lib
from flmjax.model.flm_audio import FLMAudioLM
from flmjax.model.pretrained import abstract_params, logical_param_specs
from flmjax.sharding import LOGICAL_AXIS_RULES, fit_sharding, logical_to_mesh_sharding


class TrainState(struct.PyTreeNode):
    # int32 scalar: optimizer updates made so far (in the trees of shardings or shapes, the step's; hence Any)
    step: Any
    params: Any
    opt_state: Any
    frozen: Any = None  # LoRA: the base weights (compute dtype): neither trained nor checkpointed


def param_shardings(config: ModelConfig, mesh: Mesh) -> dict:
    """A NamedSharding for every parameter, from its logical axes and `LOGICAL_AXIS_RULES`."""
    shardings = logical_to_mesh_sharding(logical_param_specs(config), mesh, LOGICAL_AXIS_RULES)
    return jax.tree_util.tree_map(lambda s, a: fit_sharding(s, a.shape), shardings, abstract_params(config))


def abstract_trainable(config: ModelConfig) -> dict:
    """Shapes of what the optimizer trains: every parameter, or with LoRA the adapters (fp32)."""
    if (lora := config.lora) is None:
        return abstract_params(config)
    return jax.eval_shape(lambda k: lora_lib.init_adapters(abstract_params(config), lora, k), jax.random.PRNGKey(0))


def trainable_shardings(config: ModelConfig, mesh: Mesh) -> dict:
    """Shardings of what the optimizer trains (adapters follow their weights' logical axes)."""
    if config.lora is None:
        return param_shardings(config, mesh)
    specs = lora_lib.adapter_specs(logical_param_specs(config), abstract_params(config), config.lora)
    shardings = logical_to_mesh_sharding(specs, mesh, LOGICAL_AXIS_RULES)
    return jax.tree_util.tree_map(lambda s, a: fit_sharding(s, a.shape), shardings, abstract_trainable(config))


def _frozen_dtype(config: ModelConfig) -> jnp.dtype:
    return jnp.dtype(config.numerics.dtype)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Every batch field (tokens/weights [B, T+1, 17], DPO's per-pair [B]): the batch dimension split
    over the activation batch axes, the rest whole."""
    return logical_to_mesh_sharding(PartitionSpec("activation_batch"), mesh, LOGICAL_AXIS_RULES)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def state_shardings(config: ModelConfig, optimizer: optax.GradientTransformation, mesh: Mesh) -> TrainState:
    """The sharding of every array of the train state: optimizer moments follow their parameters."""
    params = trainable_shardings(config, mesh)
    opt_shapes = jax.eval_shape(optimizer.init, abstract_trainable(config))
    opt = optax.tree_map_params(
        optimizer, lambda _, sharding: sharding, opt_shapes, params, transform_non_params=lambda _: replicated(mesh)
    )
    frozen = None if config.lora is None else param_shardings(config, mesh)
    return TrainState(step=replicated(mesh), params=params, opt_state=opt, frozen=frozen)


def abstract_state(config: ModelConfig, optimizer: optax.GradientTransformation, mesh: Mesh) -> TrainState:
    """ShapeDtypeStructs (with shardings) of the whole train state: a restore target, an AOT input."""
    params = abstract_trainable(config)
    frozen = None
    if config.lora is not None:
        dtype = _frozen_dtype(config)
        frozen = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, dtype), abstract_params(config))
    shapes = TrainState(
        step=jax.ShapeDtypeStruct((), jnp.int32),
        params=params,
        opt_state=jax.eval_shape(optimizer.init, params),
        frozen=frozen,
    )
    return jax.tree_util.tree_map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
        shapes,
        state_shardings(config, optimizer, mesh),
    )


def random_state(config: ModelConfig, optimizer: optax.GradientTransformation, mesh: Mesh, seed: int) -> TrainState:
    """Fresh parameters and optimizer state, each array created on its own shards (LoRA: a random
    base with fresh adapters)."""
    module = FLMAudioLM(config)
    example = jnp.broadcast_to(jnp.asarray(config.tokens.initial_column), (1, 2, config.tokens.num_streams))

    def init(key):
        params = nn.unbox(module.init(key, example))["params"]
        if config.lora is not None:
            return _lora_start(params, config, optimizer, jax.random.fold_in(key, 1))
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params))

    return jax.jit(init, out_shardings=state_shardings(config, optimizer, mesh))(jax.random.PRNGKey(seed))


def state_from_params(
    params: Any, config: ModelConfig, optimizer: optax.GradientTransformation, mesh: Mesh, seed: int = 0
) -> TrainState:
    """Step 0 with a fresh optimizer around given parameters (host arrays, or device arrays anywhere).
    With LoRA the parameters are the frozen base, and the adapters start fresh (seed `seed`)."""
    shardings = state_shardings(config, optimizer, mesh)
    lora = config.lora is not None
    dtype = _frozen_dtype(config) if lora else None
    params = jax.tree_util.tree_map(
        lambda p, a, s: jax.device_put(
            np.asarray(p, dtype or a.dtype) if isinstance(p, np.ndarray) else p.astype(dtype or a.dtype), s
        ),
        params,
        abstract_params(config),
        shardings.frozen if lora else shardings.params,
    )
    if lora:
        init = lambda p: _lora_start(p, config, optimizer, jax.random.PRNGKey(seed))  # noqa: E731
        return jax.jit(init, in_shardings=(shardings.frozen,), out_shardings=shardings)(params)
    init = lambda p: TrainState(step=jnp.zeros((), jnp.int32), params=p, opt_state=optimizer.init(p))  # noqa: E731
    return jax.jit(init, in_shardings=(shardings.params,), out_shardings=shardings)(params)


def _lora_start(base: Any, config: ModelConfig, optimizer: optax.GradientTransformation, key: jax.Array) -> TrainState:
    assert config.lora is not None  # only LoRA runs start here
    adapters = lora_lib.init_adapters(base, config.lora, key)
    frozen = jax.tree_util.tree_map(lambda p: p.astype(_frozen_dtype(config)), base)
    return TrainState(step=jnp.zeros((), jnp.int32), params=adapters, opt_state=optimizer.init(adapters), frozen=frozen)
