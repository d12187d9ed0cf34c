"""The jitted train and eval steps.

A train step splits the global batch into `micro_batches` and accumulates gradients over them. Each
loss term is normalised by its token count over the *whole* batch (not per micro-batch), so the
accumulated gradient equals the gradient of the full batch's loss whatever the split: a micro-batch
contributes `coefficient * its CE sum / the batch's mass` per term.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from flmjax.config import ModelConfig
from flmjax.model.flm_audio import FLMAudioLM
from flmjax.sharding import activation_sharding
from flmjax.train.loss import LossCoefficients, add_terms, finalize_loss, loss_terms
from flmjax.train.optimizer import apply_learning_rate
from flmjax.train.state import TrainState, batch_sharding, replicated

Batch = dict[str, jax.Array]  # {"tokens": int32 [B, T+1, 17], "weights": float32 [B, T+1, 17]}
Terms = dict[str, dict[str, jax.Array]]


def _batch_terms(module: FLMAudioLM, params: Any, batch: Batch) -> Terms:
    text_logits, audio_logits = module.apply({"params": params}, batch["tokens"])
    return loss_terms(text_logits, audio_logits, batch["tokens"], batch["weights"], module.config.tokens)


def _term_masses(config: ModelConfig, batch: Batch) -> dict[str, jax.Array]:
    """The weight mass of every loss term in `batch`, by the loss's own masking rules. The logits passed
    are placeholders: only the masses are used, so XLA removes everything computed from them."""
    b, t = batch["tokens"].shape[0], batch["tokens"].shape[1] - 1
    text = jnp.zeros((b, t, config.vocab_size), jnp.float32)
    audio = jnp.zeros((b, t, config.num_codebooks, config.audio_vocab_size), jnp.float32)
    terms = loss_terms(text, audio, batch["tokens"], batch["weights"], config.tokens)
    return {name: term["mass"] for name, term in terms.items()}


def _split_micro_batches(batch: Batch, count: int) -> Batch:
    """[B, ...] -> [count, B / count, ...]; micro-batch j takes rows j, j + count, ... so every device
    keeps its own rows (the batch is sharded in contiguous blocks)."""

    def split(x):
        x = x.reshape(x.shape[0] // count, count, *x.shape[1:]).swapaxes(0, 1)
        return nn.with_logical_constraint(x, (None, "activation_batch") + (None,) * (x.ndim - 2))

    return jax.tree_util.tree_map(split, batch)


def make_train_step(
    config: ModelConfig,
    optimizer: optax.GradientTransformation,
    coefficients: LossCoefficients,
    micro_batches: int,
    mesh: Mesh,
) -> Callable[[TrainState, Batch, jax.Array], tuple[TrainState, dict[str, jax.Array]]]:
    """(state, batch, learning rate) -> (next state, metrics): `finalize_loss`'s values for the batch
    plus `grad_norm` (before clipping) and `lr`."""
    module = FLMAudioLM(config)

    def grads_and_terms(params, batch, masses):
        def objective(p):
            terms = _batch_terms(module, p, batch)
            if masses is not None:  # normalise by the whole batch's masses (gradient accumulation)
                terms_for_loss = {k: {**v, "mass": masses[k]} for k, v in terms.items()}
            else:
                terms_for_loss = terms
            return finalize_loss(terms_for_loss, coefficients)["loss"], terms

        (_, terms), grads = jax.value_and_grad(objective, has_aux=True)(params)
        return grads, terms

    def step(state: TrainState, batch: Batch, learning_rate: jax.Array):
        with activation_sharding(mesh):
            if micro_batches == 1:
                grads, terms = grads_and_terms(state.params, batch, None)
            else:
                masses = _term_masses(config, batch)

                def accumulate(grads, micro):
                    g, terms = grads_and_terms(state.params, micro, masses)
                    return jax.tree_util.tree_map(jnp.add, grads, g), terms

                zeros = jax.tree_util.tree_map(jnp.zeros_like, state.params)
                grads, stacked = jax.lax.scan(accumulate, zeros, _split_micro_batches(batch, micro_batches))
                terms = jax.tree_util.tree_map(lambda x: jnp.sum(x, axis=0), stacked)
            updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
            params = optax.apply_updates(state.params, apply_learning_rate(updates, learning_rate))
        metrics = finalize_loss(terms, coefficients)
        metrics["grad_norm"] = optax.global_norm(grads)
        metrics["lr"] = learning_rate
        return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

    return step


def jit_train_step(step: Callable, shardings: TrainState, mesh: Mesh) -> Callable:
    """The train step compiled for `mesh`: the state is donated and keeps its shardings."""
    return jax.jit(
        step,
        in_shardings=(shardings, batch_sharding(mesh), replicated(mesh)),
        out_shardings=(shardings, replicated(mesh)),
        donate_argnums=(0,),
    )


def make_eval_step(config: ModelConfig, params_shardings: Any, mesh: Mesh) -> Callable[[Any, Batch], Terms]:
    """(params, batch) -> the batch's `loss_terms` sums (add them over batches, then `finalize_loss`)."""
    module = FLMAudioLM(config)

    def step(params, batch):
        with activation_sharding(mesh):
            return _batch_terms(module, params, batch)

    return jax.jit(step, in_shardings=(params_shardings, batch_sharding(mesh)), out_shardings=replicated(mesh))


def finalize_eval(terms: list[Terms], coefficients: LossCoefficients) -> dict[str, jax.Array]:
    """Metrics of a whole evaluation from its batches' term sums."""
    total = terms[0]
    for more in terms[1:]:
        total = add_terms(total, more)
    return finalize_loss(total, coefficients)
