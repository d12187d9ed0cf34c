"""The jitted train and eval steps, for any `Objective` (the FLM loss here, DPO in `flmjax.train.dpo`).

A train step splits the global batch into `micro_batches` and accumulates gradients over them. An
objective's sums add over micro-batches and its loss is normalised by the *whole* batch's normalisers
(token counts, pair counts), so the accumulated gradient equals the gradient of the full batch's loss
whatever the split: for the FLM loss a micro-batch contributes `coefficient * its CE sum / the batch's
mass` per term. Extra step inputs (`context`, e.g. DPO's frozen reference parameters) pass through to
the objective.

With LoRA the gradient is taken with respect to the adapters only (`state.params`): the objective sees
`Adapted(state.frozen, adapters, dropout key)` as its parameters, and the model reads the frozen base as
its `params` collection. Adapter dropout draws from a key of the step number (and micro-batch), so a
resumed run draws the same masks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from flmjax.config import ModelConfig
from flmjax.model.flm_audio import FLMAudioLM
from flmjax.model.lora import LORA
from flmjax.sharding import activation_sharding
from flmjax.train.loss import (
    LossCoefficients,
    add_terms,
    chunked_text_ce_and_correct,
    finalize_loss,
    loss_terms,
    terms_of,
    text_ce_and_correct,
)
from flmjax.train.optimizer import apply_learning_rate
from flmjax.train.state import TrainState, batch_sharding, replicated

Batch = dict[str, jax.Array]  # {"tokens": int32 [B, T+1, 17], "weights": float32 [B, T+1, 17]}
Terms = dict[str, dict[str, jax.Array]]


class Adapted(NamedTuple):
    """LoRA's parameters as the objectives see them: adapters on a frozen base (and the dropout key)."""

    base: Any
    adapters: Any
    rng: Any = None


def apply_model(module: FLMAudioLM, params: Any, *args: Any, **kwargs: Any) -> Any:
    """`module.apply` under `params`: a parameter tree, or `Adapted` ones."""
    if isinstance(params, Adapted):
        rngs = None if params.rng is None else {"dropout": params.rng}
        return module.apply({"params": params.base, LORA: params.adapters}, *args, rngs=rngs, **kwargs)
    return module.apply({"params": params}, *args, **kwargs)


def model_params(state: TrainState) -> Any:
    """What the model runs with: the parameters, or with LoRA the adapters on the frozen base."""
    return state.params if state.frozen is None else Adapted(state.frozen, state.params)


def forward_ce(module: FLMAudioLM, params: Any, tokens: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The text positions' CE and correctness [B, T] and the audio logits of sequences `tokens` under
    `params` (a tree, or `Adapted`; with `text_loss_chunk`, the text logits a block of columns at a time)."""
    config = module.config
    chunk = config.numerics.text_loss_chunk
    if chunk <= 0:
        text_logits, audio_logits = apply_model(module, params, tokens)
        return (*text_ce_and_correct(text_logits, tokens[:, 1:, 0]), audio_logits)
    hidden, audio_logits = apply_model(module, params, tokens, method=FLMAudioLM.features)
    logits_of = lambda h: apply_model(module, params, h, method=FLMAudioLM.text_logits)  # noqa: E731
    text_ce, text_ok = chunked_text_ce_and_correct(logits_of, hidden, tokens[:, 1:, 0], chunk)
    return text_ce, text_ok, audio_logits


def batch_terms(module: FLMAudioLM, params: Any, batch: Batch) -> Terms:
    """`loss_terms` of the sequences `batch["tokens"]` under `params` (see `forward_ce`)."""
    tokens = batch["tokens"]
    return terms_of(*forward_ce(module, params, tokens), tokens, batch["weights"], module.config.tokens)


def term_masses(config: ModelConfig, batch: Batch) -> dict[str, jax.Array]:
    """The weight mass of every loss term in `batch`, by the loss's own masking rules. The logits passed
    are placeholders: only the masses are used, so XLA removes everything computed from them."""
    b, t = batch["tokens"].shape[0], batch["tokens"].shape[1] - 1
    text = jnp.zeros((b, t, config.vocab_size), jnp.float32)
    audio = jnp.zeros((b, t, config.num_codebooks, config.audio_vocab_size), jnp.float32)
    terms = loss_terms(text, audio, batch["tokens"], batch["weights"], config.tokens)
    return {name: term["mass"] for name, term in terms.items()}


def with_masses(terms: Terms, masses: dict[str, jax.Array] | None) -> Terms:
    """Terms normalised by given masses (the whole batch's, under gradient accumulation) or their own."""
    return terms if masses is None else {k: {**v, "mass": masses[k]} for k, v in terms.items()}


class Objective(Protocol):
    """What a train step minimises. `sums` are additive over micro-batches (a pytree of arrays);
    `loss` normalises them by the whole batch's `normalisers` (None: by their own); `metrics` turns
    sums (of a batch or of many eval batches) into the logged values."""

    def sums(self, module: FLMAudioLM, params: Any, batch: Batch, *context: Any) -> Any: ...

    def normalisers(self, config: ModelConfig, batch: Batch) -> Any: ...

    def loss(self, sums: Any, normalisers: Any) -> jax.Array: ...

    def metrics(self, sums: Any) -> dict[str, jax.Array]: ...


@dataclasses.dataclass(frozen=True)
class FLMObjective:
    """The FLM-Audio loss (paper Eq. 3): sums are `loss_terms`, metrics `finalize_loss`'s."""

    coefficients: LossCoefficients = LossCoefficients()

    def sums(self, module: FLMAudioLM, params: Any, batch: Batch) -> Terms:
        return batch_terms(module, params, batch)

    def normalisers(self, config: ModelConfig, batch: Batch) -> dict[str, jax.Array]:
        return term_masses(config, batch)

    def loss(self, sums: Terms, normalisers: dict[str, jax.Array] | None) -> jax.Array:
        return finalize_loss(with_masses(sums, normalisers), self.coefficients)["loss"]

    def metrics(self, sums: Terms) -> dict[str, jax.Array]:
        return finalize_loss(sums, self.coefficients)


def as_objective(objective: Objective | LossCoefficients) -> Objective:
    return FLMObjective(objective) if isinstance(objective, LossCoefficients) else objective


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
    objective: Objective | LossCoefficients,
    micro_batches: int,
    mesh: Mesh,
) -> Callable[..., tuple[TrainState, dict[str, jax.Array]]]:
    """(state, batch, learning rate, *context) -> (next state, metrics): the objective's metrics for the
    batch plus `grad_norm` (before clipping) and `lr`. Loss coefficients stand for the FLM objective."""
    module = FLMAudioLM(config)
    objective = as_objective(objective)
    uses_rng = config.lora is not None and config.lora.dropout > 0

    def grads_and_sums(params, batch, normalisers, context, frozen, rng):
        def loss(p):
            sums = objective.sums(module, p if frozen is None else Adapted(frozen, p, rng), batch, *context)
            return objective.loss(sums, normalisers), sums

        (_, sums), grads = jax.value_and_grad(loss, has_aux=True)(params)
        return grads, sums

    def step(state: TrainState, batch: Batch, learning_rate: jax.Array, *context: Any):
        key = jax.random.fold_in(jax.random.PRNGKey(0), state.step) if uses_rng else None
        with activation_sharding(mesh):
            if micro_batches == 1:
                grads, sums = grads_and_sums(state.params, batch, None, context, state.frozen, key)
            else:
                normalisers = objective.normalisers(config, batch)

                def accumulate(grads, micro):
                    micro, j = micro
                    rng = None if key is None else jax.random.fold_in(key, j)
                    g, sums = grads_and_sums(state.params, micro, normalisers, context, state.frozen, rng)
                    return jax.tree_util.tree_map(jnp.add, grads, g), sums

                zeros = jax.tree_util.tree_map(jnp.zeros_like, state.params)
                micros = (_split_micro_batches(batch, micro_batches), jnp.arange(micro_batches))
                grads, stacked = jax.lax.scan(accumulate, zeros, micros)
                sums = jax.tree_util.tree_map(lambda x: jnp.sum(x, axis=0), stacked)
            updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
            params = optax.apply_updates(state.params, apply_learning_rate(updates, learning_rate))
        metrics = objective.metrics(sums)
        metrics["grad_norm"] = optax.global_norm(grads)
        metrics["lr"] = learning_rate
        return TrainState(step=state.step + 1, params=params, opt_state=opt_state, frozen=state.frozen), metrics

    return step


def jit_train_step(
    step: Callable, shardings: TrainState, mesh: Mesh, context_shardings: tuple = ()
) -> jax.stages.Wrapped:
    """The train step compiled for `mesh`: the state is donated and keeps its shardings; `context`
    inputs (after the learning rate) take `context_shardings`."""
    return jax.jit(
        step,
        in_shardings=(shardings, batch_sharding(mesh), replicated(mesh), *context_shardings),
        out_shardings=(shardings, replicated(mesh)),
        donate_argnums=(0,),
    )


def make_eval_step(
    config: ModelConfig,
    params_shardings: Any,
    mesh: Mesh,
    objective: Objective | LossCoefficients = LossCoefficients(),
    context_shardings: tuple = (),
) -> Callable[..., Any]:
    """(params, batch, *context) -> the batch's objective sums (add them over batches, then
    `finalize_eval`); `params` as `model_params` gives them (`params_shardings` of the same form)."""
    module = FLMAudioLM(config)
    objective = as_objective(objective)

    def step(params, batch, *context):
        with activation_sharding(mesh):
            return objective.sums(module, params, batch, *context)

    return jax.jit(
        step,
        in_shardings=(params_shardings, batch_sharding(mesh), *context_shardings),
        out_shardings=replicated(mesh),
    )


def finalize_eval(sums: list[Any], objective: Objective | LossCoefficients) -> dict[str, jax.Array]:
    """Metrics of a whole evaluation from its batches' sums."""
    total = sums[0]
    for more in sums[1:]:
        total = add_terms(total, more)
    return as_objective(objective).metrics(total)
