"""The FLM-Audio training loss (paper Eq. 3).

L = a1 * CE(speak, semantic) + a2 * CE(speak, acoustic) + b * CE(monologue) + g * CE(<wait>)
    (+ w_sil * CE([SILENCE]) + w_role * CE([ASSISTANT], [EPAD]) with BayLing-Duplex's state tokens).

Positions carry float weights (1 = in the loss, 0 = not; the data layouts produce them). The class of a
weighted position follows from where it is and what it predicts: speak codebook 0 is semantic, 1..7
acoustic; a text target equal to `<wait>` is a wait position, any other text target is monologue. Speak
targets that are not Mimi codes (pad / empty ids) never carry loss. Listen streams are inputs only.
Each term is normalised by its own weight mass. `loss_terms` returns sums and masses so that gradient
accumulation can add micro-batches before normalising (`finalize_loss`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from flmjax.tokens import TokenIds

TERMS = ("semantic", "acoustic", "monologue", "wait", "silence", "role")


@dataclasses.dataclass(frozen=True)
class LossCoefficients:
    semantic: float = 1.0  # alpha_1
    acoustic: float = 0.5  # alpha_2
    monologue: float = 1.0  # beta
    wait: float = 0.01  # gamma
    # BayLing-Duplex's state tokens (vocabularies that have them): omega_sil for [SILENCE], omega_role for
    # [ASSISTANT] / [EPAD]; [PAD] is monologue. Defaults: [SILENCE] stands where `<wait>` would, so gamma;
    # the role tokens as monologue. BayLing's 0.1 / 10 weight one mean over all positions (its Eq. 5),
    # not per-class means as here, so its values do not carry over as they are.
    silence: float = 0.01  # omega_sil
    role: float = 1.0  # omega_role


def _masked(ce: jax.Array, correct: jax.Array, weight: jax.Array) -> dict[str, jax.Array]:
    return {"ce_sum": jnp.sum(ce * weight), "mass": jnp.sum(weight), "correct": jnp.sum(correct * weight)}


def text_ce_and_correct(text_logits: jax.Array, text_target: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-position CE (fp32 softmax) and argmax-correctness of text logits [..., V] for targets [...]."""
    text_logits = text_logits.astype(jnp.float32)
    ce = optax.softmax_cross_entropy_with_integer_labels(text_logits, text_target)
    return ce, (jnp.argmax(text_logits, -1) == text_target).astype(jnp.float32)


def chunked_text_ce_and_correct(
    logits_of: Callable[[jax.Array], jax.Array], hidden: jax.Array, text_target: jax.Array, chunk: int
) -> tuple[jax.Array, jax.Array]:
    """`text_ce_and_correct(logits_of(hidden), text_target)` for hidden [B, T, E], `chunk` columns at a time.

    Only one block's logits [B, chunk, V] exist at once, forward and backward (each block is
    rematerialised for its gradient): the full fp32 logits of flm7b are 5 GB per 8192-frame sequence.
    The columns are chunked, not the vocabulary: the vocabulary is split over `tensor` (151668 ids
    have no convenient factors), the columns are whole on every device.
    """
    b, t = text_target.shape
    if chunk <= 0 or t <= chunk:
        return text_ce_and_correct(logits_of(hidden), text_target)
    if t % chunk:
        raise ValueError(f"sequence length {t} is not a multiple of text_loss_chunk {chunk}")

    def blocks(x):  # [B, T, ...] -> [T / chunk, B, chunk, ...], batch split as before
        x = x.reshape(b, t // chunk, chunk, *x.shape[2:]).swapaxes(0, 1)
        return nn.with_logical_constraint(x, (None, "activation_batch", "activation_length") + (None,) * (x.ndim - 3))

    block = jax.checkpoint(lambda h, y: text_ce_and_correct(logits_of(h), y))
    ce, ok = jax.lax.map(lambda args: block(*args), (blocks(hidden), blocks(text_target)))
    return ce.swapaxes(0, 1).reshape(b, t), ok.swapaxes(0, 1).reshape(b, t)


def _positions(
    text_ce: jax.Array,
    text_ok: jax.Array,
    audio_logits: jax.Array,
    tokens: jax.Array,
    weights: jax.Array,
    ids: TokenIds,
) -> dict[str, tuple[jax.Array, jax.Array, jax.Array]]:
    """Per-position (CE, correct, weight) of every loss class, each [B, T] or [B, T, K-1].

    text_ce/text_ok [B, T] (`text_ce_and_correct`), audio_logits [B, T, K, A], tokens/weights [B, T+1, 17]
    in delayed columns: the targets are columns 1..T.
    """
    k = ids.num_codebooks
    text_target = tokens[:, 1:, 0]
    text_weight = weights[:, 1:, 0].astype(jnp.float32)
    audio_target = tokens[:, 1:, 1 : 1 + k]
    audio_weight = weights[:, 1:, 1 : 1 + k].astype(jnp.float32) * (audio_target < ids.codebook_size)

    audio_logits = audio_logits.astype(jnp.float32)
    audio_ce = optax.softmax_cross_entropy_with_integer_labels(audio_logits, audio_target)
    audio_ok = (jnp.argmax(audio_logits, -1) == audio_target).astype(jnp.float32)

    is_wait = (text_target == ids.text_wait).astype(jnp.float32)
    text_classes = {"wait": is_wait}
    if ids.state_tokens is not None:
        silence, assistant, _, epad = ids.state_tokens
        text_classes["silence"] = (text_target == silence).astype(jnp.float32)
        text_classes["role"] = ((text_target == assistant) | (text_target == epad)).astype(jnp.float32)
    monologue = 1.0 - sum(text_classes.values())
    return {
        "semantic": (audio_ce[..., 0], audio_ok[..., 0], audio_weight[..., 0]),
        "acoustic": (audio_ce[..., 1:], audio_ok[..., 1:], audio_weight[..., 1:]),
        "monologue": (text_ce, text_ok, text_weight * monologue),
        **{name: (text_ce, text_ok, text_weight * mask) for name, mask in text_classes.items()},
    }


def loss_terms(
    text_logits: jax.Array,
    audio_logits: jax.Array,
    tokens: jax.Array,
    weights: jax.Array,
    ids: TokenIds,
) -> dict[str, dict[str, jax.Array]]:
    """Per-term weighted CE sums, weight masses and correct counts (plus one entry per codebook).

    text_logits [B, T, V], audio_logits [B, T, K, A], tokens/weights [B, T+1, 17] in delayed columns:
    the targets are columns 1..T.
    """
    return terms_of(*text_ce_and_correct(text_logits, tokens[:, 1:, 0]), audio_logits, tokens, weights, ids)


def terms_of(
    text_ce: jax.Array,
    text_ok: jax.Array,
    audio_logits: jax.Array,
    tokens: jax.Array,
    weights: jax.Array,
    ids: TokenIds,
) -> dict[str, dict[str, jax.Array]]:
    """`loss_terms` from the text positions' CE and correctness [B, T] (`text_ce_and_correct`)."""
    positions = _positions(text_ce, text_ok, audio_logits, tokens, weights, ids)
    terms = {name: _masked(*position) for name, position in positions.items()}
    ac_ce, ac_ok, ac_w = positions["acoustic"]
    terms["codebook_0"] = terms["semantic"]
    for c in range(1, ids.num_codebooks):
        terms[f"codebook_{c}"] = _masked(ac_ce[..., c - 1], ac_ok[..., c - 1], ac_w[..., c - 1])
    return terms


def sequence_log_probs(
    text_logits: jax.Array,
    audio_logits: jax.Array,
    tokens: jax.Array,
    weights: jax.Array,
    ids: TokenIds,
    coefficients: LossCoefficients = LossCoefficients(),
) -> jax.Array:
    """log pi(s) of every sequence, [B]: the sum over the positions that carry loss of their
    log-probability, each weighted by its position weight and its class's coefficient (alpha_1, alpha_2,
    beta, gamma; omega_sil, omega_role). Unlike `finalize_loss` it is not normalised per class: DPO
    compares the likelihoods of two sequences whose classes hold different token counts (a late reply has
    more `<wait>` and silence positions), and a per-class mean would not be a sequence's log-likelihood."""
    text_ce, text_ok = text_ce_and_correct(text_logits, tokens[:, 1:, 0])
    return log_probs_of(text_ce, text_ok, audio_logits, tokens, weights, ids, coefficients)


def log_probs_of(
    text_ce: jax.Array,
    text_ok: jax.Array,
    audio_logits: jax.Array,
    tokens: jax.Array,
    weights: jax.Array,
    ids: TokenIds,
    coefficients: LossCoefficients = LossCoefficients(),
) -> jax.Array:
    """`sequence_log_probs` from the text positions' CE and correctness [B, T] (`text_ce_and_correct`)."""
    total = jnp.zeros(tokens.shape[:1], jnp.float32)
    for name, (ce, _, weight) in _positions(text_ce, text_ok, audio_logits, tokens, weights, ids).items():
        total = total - getattr(coefficients, name) * jnp.sum((ce * weight).reshape(ce.shape[0], -1), axis=1)
    return total


def finalize_loss(terms: dict[str, dict[str, jax.Array]], coefficients: LossCoefficients) -> dict[str, jax.Array]:
    """Normalise each term by its own mass (a term with no mass contributes 0) and weight the total.

    Returns `loss` (the total), each term's mean CE under its name, `<term>_acc` accuracies,
    `<term>_tokens` masses, and `codebook_<c>_acc` per speak codebook.
    """
    out: dict[str, jax.Array] = {}
    total = jnp.zeros((), jnp.float32)
    for name, t in terms.items():
        denom = jnp.maximum(t["mass"], 1e-8)
        has_mass = t["mass"] > 0
        mean_ce = jnp.where(has_mass, t["ce_sum"] / denom, 0.0)
        out[f"{name}_acc"] = jnp.where(has_mass, t["correct"] / denom, 0.0)
        if name in TERMS:
            out[name] = mean_ce
            out[f"{name}_tokens"] = t["mass"]
            total = total + getattr(coefficients, name) * mean_ce
    out["loss"] = total
    return out


def flm_loss(
    text_logits: jax.Array,
    audio_logits: jax.Array,
    tokens: jax.Array,
    weights: jax.Array,
    ids: TokenIds,
    coefficients: LossCoefficients = LossCoefficients(),
) -> dict[str, jax.Array]:
    """The total loss and every term, accuracy and mass of one batch (see module docstring)."""
    return finalize_loss(loss_terms(text_logits, audio_logits, tokens, weights, ids), coefficients)


def add_terms(a: dict, b: dict) -> dict:
    """Sum two `loss_terms` results (gradient accumulation)."""
    return jax.tree_util.tree_map(jnp.add, a, b)
