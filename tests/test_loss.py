"""Paper Eq. 3 on hand-computed cases: every term normalised by its own weight mass."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from flmjax.tokens import TokenIds
from flmjax.train.loss import LossCoefficients, add_terms, finalize_loss, flm_loss, loss_terms

# 2 codebooks of 2 codes (ids 2 = pad, 3 = empty), a 4-word text vocabulary whose `<wait>` is 3.
IDS = TokenIds(
    text_vocab_size=4, text_wait=3, text_asr=2, text_answer=2, bos=0, eos=0, num_codebooks=2, codebook_size=2
)
L2 = math.log(2)
LOGP = np.log([0.5, 0.25, 0.125, 0.125])  # CE of target i is -LOGP[i]: log2, log4, log8, log8


def case(text_targets, speak_targets, weights=None):
    """Tokens/weights [1, T+1, 5] whose columns 1..T hold the targets; every logit row is LOGP."""
    t = len(text_targets)
    tokens = np.zeros((1, t + 1, IDS.num_streams), np.int32)
    tokens[0, 1:, 0] = text_targets
    tokens[0, 1:, 1:3] = speak_targets
    w = np.ones_like(tokens, np.float32) if weights is None else weights
    text_logits = np.broadcast_to(LOGP, (1, t, 4)).astype(np.float32)
    audio_logits = np.broadcast_to(LOGP, (1, t, 2, 4)).astype(np.float32)
    return text_logits, audio_logits, tokens, w


def test_hand_computed_terms_and_total():
    out = flm_loss(*case(text_targets=[1, 3], speak_targets=[[0, 1], [1, 2]]), IDS)
    assert float(out["monologue"]) == pytest.approx(2 * L2, rel=1e-6)  # target 1: log 4
    assert float(out["wait"]) == pytest.approx(3 * L2, rel=1e-6)  # target <wait>: log 8
    assert float(out["semantic"]) == pytest.approx((L2 + 2 * L2) / 2, rel=1e-6)
    # The acoustic target at t=1 is the pad id 2: never in the loss even with weight 1.
    assert float(out["acoustic"]) == pytest.approx(2 * L2, rel=1e-6)
    assert float(out["acoustic_tokens"]) == 1.0
    expected = 1 * 1.5 * L2 + 0.5 * 2 * L2 + 1 * 2 * L2 + 0.01 * 3 * L2
    assert float(out["loss"]) == pytest.approx(expected, rel=1e-6)
    assert float(out["semantic_acc"]) == 0.5  # argmax is 0: right at t=0 only
    assert float(out["codebook_0_acc"]) == 0.5 and float(out["codebook_1_acc"]) == 0.0
    assert float(out["monologue_acc"]) == 0.0


def test_all_wait_text_channel_has_no_monologue_term():
    out = flm_loss(*case(text_targets=[3, 3, 3], speak_targets=[[0, 0]] * 3), IDS)
    assert float(out["monologue_tokens"]) == 0.0 and float(out["monologue"]) == 0.0
    assert float(out["wait"]) == pytest.approx(3 * L2, rel=1e-6)
    assert float(out["loss"]) == pytest.approx(1 * L2 + 0.5 * L2 + 0.01 * 3 * L2, rel=1e-6)


def test_zero_weight_positions_and_listen_streams_carry_nothing():
    text_logits, audio_logits, tokens, w = case(text_targets=[1, 0], speak_targets=[[0, 0], [1, 1]])
    base = flm_loss(text_logits, audio_logits, tokens, w, IDS)
    w2 = w.copy()
    w2[0, 2, 0] = 0.0  # text target 0 at t=1 (CE log2) leaves the monologue mean
    w2[0, 2, 1:3] = 0.0  # both speak codes at t=1
    w2[0, :, 3:] = 7.0  # listen weights are never read
    out = flm_loss(text_logits, audio_logits, tokens, w2, IDS)
    assert float(out["monologue"]) == pytest.approx(2 * L2, rel=1e-6)
    assert float(out["semantic"]) == pytest.approx(L2, rel=1e-6)
    assert float(base["monologue"]) == pytest.approx(1.5 * L2, rel=1e-6)
    # Column 0 is never a target: its weights do not matter.
    w3 = w.copy()
    w3[0, 0] = 0.0
    assert float(flm_loss(text_logits, audio_logits, tokens, w3, IDS)["loss"]) == float(base["loss"])


def test_coefficients_scale_their_terms():
    args = case(text_targets=[1, 3], speak_targets=[[0, 1], [1, 0]])
    out = flm_loss(*args, IDS, LossCoefficients(semantic=0, acoustic=0, monologue=0, wait=1))
    assert float(out["loss"]) == pytest.approx(3 * L2, rel=1e-6)


def test_accumulated_micro_batches_equal_the_full_batch():
    rng = np.random.default_rng(0)
    b, t = 4, 5
    tokens = np.zeros((b, t + 1, IDS.num_streams), np.int32)
    tokens[..., 0] = rng.integers(0, 4, (b, t + 1))
    tokens[..., 1:] = rng.integers(0, 4, (b, t + 1, 4))
    weights = rng.integers(0, 2, tokens.shape).astype(np.float32)
    text = rng.normal(size=(b, t, 4)).astype(np.float32)
    audio = rng.normal(size=(b, t, 2, 4)).astype(np.float32)
    full = flm_loss(text, audio, tokens, weights, IDS)
    halves = [loss_terms(text[s], audio[s], tokens[s], weights[s], IDS) for s in (slice(0, 1), slice(1, 4))]
    acc = finalize_loss(add_terms(*halves), LossCoefficients())
    for key in full:
        np.testing.assert_allclose(np.asarray(acc[key]), np.asarray(full[key]), rtol=1e-6)
    assert bool(jnp.isfinite(full["loss"]))


def test_the_chunked_text_loss_equals_the_full_logits_loss_and_its_gradient(tiny_model):
    """`text_loss_chunk` makes the text logits 8 columns at a time (rematerialised in the backward pass):
    the same terms, accuracies and gradients as the whole sequence's logits, to fp32 rounding."""
    import jax

    from flmjax.model.flm_audio import FLMAudioLM
    from flmjax.train.step import batch_terms
    from tests.synthetic_data import synthetic_sample

    config = tiny_model.config
    rng = np.random.default_rng(0)
    noise = lambda p: p + 0.05 * rng.standard_normal(p.shape).astype(p.dtype)  # noqa: E731 (every weight random)
    params = jax.tree_util.tree_map(noise, tiny_model.params)
    samples = [synthetic_sample(config, 32, i) for i in range(2)]
    tokens = np.stack([s["tokens"] for s in samples])
    tokens[:, 1:, 0] = rng.integers(0, config.vocab_size, tokens[:, 1:, 0].shape)  # every id, <wait> too
    tokens[:, 1::3, 0] = config.tokens.text_wait
    batch = {"tokens": jnp.asarray(tokens), "weights": jnp.asarray(np.stack([s["weights"] for s in samples]))}

    def loss(p, chunk):
        terms = batch_terms(FLMAudioLM(config.with_numerics(text_loss_chunk=chunk)), p, batch)
        return finalize_loss(terms, LossCoefficients())["loss"], terms

    (full, full_terms), full_grads = jax.jit(jax.value_and_grad(lambda p: loss(p, 0), has_aux=True))(params)
    (chunked, terms), grads = jax.jit(jax.value_and_grad(lambda p: loss(p, 8), has_aux=True))(params)
    assert float(full_terms["monologue"]["mass"]) > 0 and float(full_terms["wait"]["mass"]) > 0
    np.testing.assert_allclose(float(chunked), float(full), rtol=1e-6)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), terms, full_terms)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), grads, full_grads)
