"""Direct preference optimisation with an auxiliary SFT term (BayLing-Duplex Stage II, Eq. 6-7).

    L = -log sigmoid(beta * [(log pi(s+) - log pi_ref(s+)) - (log pi(s-) - log pi_ref(s-))])
        + lambda_ftx * L_SFT(s+)

log pi(s) is `flmjax.train.loss.sequence_log_probs`: the sum over the positions that carry loss (text
channel and speak codes) of their log-probabilities, each weighted by its position weight and its loss
class's coefficient (alpha_1, alpha_2, beta, gamma of Eq. 3), not normalised. L_SFT is the FLM loss
(Eq. 3, each class normalised by its own mass) of the chosen sequences. pi_ref is the frozen previous
stage: its log-probabilities come from its frozen parameters inside the step (on the fly: what the
trainer does) or with the batch (`chosen_ref_logp`, `rejected_ref_logp`, computed once per pair by
`reference_log_probs`); `launch/bench_dpo.py` measures both (docs in the README's DPO section).

A pair batch holds the chosen side under the SFT batch's keys and the rejected side beside it:
{"tokens", "weights", "rejected_tokens", "rejected_weights"}, each [B, T+1, 17] in delayed columns
(so the pipeline, sharding and micro-batching of SFT batches apply unchanged).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from flmjax.config import ModelConfig
from flmjax.model.flm_audio import FLMAudioLM
from flmjax.train.config import DPOConfig
from flmjax.train.loss import LossCoefficients, finalize_loss, log_probs_of, terms_of
from flmjax.train.step import Adapted, Batch, forward_ce, term_masses, with_masses


def rejected_side(batch: Batch) -> Batch:
    return {"tokens": batch["rejected_tokens"], "weights": batch["rejected_weights"]}


def preference_losses(
    policy_chosen: jax.Array, policy_rejected: jax.Array, ref_chosen: jax.Array, ref_rejected: jax.Array, beta: float
) -> dict[str, jax.Array]:
    """Per-pair Eq. 7 from sequence log-probabilities [B]: `loss`, the implicit rewards
    beta * (log pi - log pi_ref) of both sides and their `margin` (chosen minus rejected)."""
    chosen = beta * (policy_chosen - ref_chosen)
    rejected = beta * (policy_rejected - ref_rejected)
    margin = chosen - rejected
    return {"loss": -jax.nn.log_sigmoid(margin), "margin": margin, "chosen_reward": chosen, "rejected_reward": rejected}


def _log_probs(
    module: FLMAudioLM, params: Any, side: Batch, coefficients: LossCoefficients
) -> tuple[jax.Array, tuple[jax.Array, jax.Array, jax.Array]]:
    """log pi of one side's sequences [B], and the positions' CE it came from (for the SFT term)."""
    ce = forward_ce(module, params, side["tokens"])
    return log_probs_of(*ce, side["tokens"], side["weights"], module.config.tokens, coefficients), ce


def reference_log_probs(
    module: FLMAudioLM, ref_params: Any, batch: Batch, coefficients: LossCoefficients = LossCoefficients()
) -> dict[str, jax.Array]:
    """pi_ref's log-probabilities of both sides of a pair batch: {"chosen_ref_logp", "rejected_ref_logp"} [B]."""
    ref_params = jax.lax.stop_gradient(ref_params)
    chosen, _ = _log_probs(module, ref_params, batch, coefficients)
    rejected, _ = _log_probs(module, ref_params, rejected_side(batch), coefficients)
    return {"chosen_ref_logp": chosen, "rejected_ref_logp": rejected}


@dataclasses.dataclass(frozen=True)
class DPOObjective:
    """Eq. 6 as a train-step `Objective`; the step's context is the reference parameters (or nothing
    when the batch carries the reference log-probabilities).

    Sums: {"sft": the chosen sides' `loss_terms`, "pairs": per-pair sums of the DPO loss, margin,
    rewards and wins}. Metrics: `loss` (Eq. 6), `dpo_loss`, `sft` (L_SFT of the chosen sides),
    `reward_margin` (mean beta-scaled margin), `chosen_reward`, `rejected_reward`, `chosen_accuracy`
    (the fraction of pairs whose chosen side has the higher reward), and every SFT term as `sft_<name>`.
    """

    dpo: DPOConfig = DPOConfig()
    coefficients: LossCoefficients = LossCoefficients()
    # LoRA: pi_ref is the frozen base with zero adapters (the stage's start), run by the policy's own
    # program, so no reference parameters travel as context
    base_reference: bool = False

    def sums(self, module: FLMAudioLM, params: Any, batch: Batch, *ref_params: Any) -> dict[str, Any]:
        chosen, chosen_ce = _log_probs(module, params, batch, self.coefficients)
        rejected, _ = _log_probs(module, params, rejected_side(batch), self.coefficients)
        if ref_params:
            ref = reference_log_probs(module, ref_params[0], batch, self.coefficients)
        elif self.base_reference:
            if not isinstance(params, Adapted):
                raise TypeError("DPOObjective(base_reference=True) needs LoRA's Adapted parameters")
            zero = jax.tree_util.tree_map(jnp.zeros_like, params.adapters)
            ref = reference_log_probs(module, Adapted(params.base, zero, params.rng), batch, self.coefficients)
        else:
            ref = {k: batch[k] for k in ("chosen_ref_logp", "rejected_ref_logp")}
        pair = preference_losses(chosen, rejected, ref["chosen_ref_logp"], ref["rejected_ref_logp"], self.dpo.beta)
        pairs = {k: jnp.sum(v) for k, v in pair.items()}
        pairs["wins"] = jnp.sum((pair["margin"] > 0).astype(jnp.float32))
        pairs["count"] = jnp.asarray(chosen.shape[0], jnp.float32)
        sft = terms_of(*chosen_ce, batch["tokens"], batch["weights"], module.config.tokens)
        return {"sft": sft, "pairs": pairs}

    def normalisers(self, config: ModelConfig, batch: Batch) -> dict[str, Any]:
        return {"sft": term_masses(config, batch), "count": jnp.asarray(batch["tokens"].shape[0], jnp.float32)}

    def loss(self, sums: dict[str, Any], normalisers: dict[str, Any] | None) -> jax.Array:
        if normalisers is None:
            masses, count = None, sums["pairs"]["count"]
        else:
            masses, count = normalisers["sft"], normalisers["count"]
        sft = finalize_loss(with_masses(sums["sft"], masses), self.coefficients)["loss"]
        return sums["pairs"]["loss"] / count + self.dpo.lambda_ftx * sft

    def metrics(self, sums: dict[str, Any]) -> dict[str, jax.Array]:
        sft = finalize_loss(sums["sft"], self.coefficients)
        pairs, count = sums["pairs"], jnp.maximum(sums["pairs"]["count"], 1.0)
        out = {f"sft_{k}": v for k, v in sft.items() if k != "loss"}
        out.update(
            dpo_loss=pairs["loss"] / count,
            sft=sft["loss"],
            reward_margin=pairs["margin"] / count,
            chosen_reward=pairs["chosen_reward"] / count,
            rejected_reward=pairs["rejected_reward"] / count,
            chosen_accuracy=pairs["wins"] / count,
        )
        out["loss"] = out["dpo_loss"] + self.dpo.lambda_ftx * out["sft"]
        return out
