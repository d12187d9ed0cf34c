"""Sampling against hand-computed cases, transformers' repetition-penalty processor and the spec's rules."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers import RepetitionPenaltyLogitsProcessor

from flmjax.infer.sampling import (
    SamplingSettings,
    SettingsError,
    StreamSampling,
    apply_repetition_penalty,
    kept_ids,
    mask_ids_from,
    parse_release_settings,
    sample,
)


def params(rows, temperature=1.0, top_p=0.0, top_k=0, greedy=False):
    def full(value, dtype):
        return jnp.full((rows,), value, dtype)

    return StreamSampling(
        full(temperature, jnp.float32), full(top_p, jnp.float32), full(top_k, jnp.int32),
        full(1.0, jnp.float32), full(0, jnp.int32), full(greedy, bool),
    )  # fmt: skip


def draws(logits, rows, **kw):
    keys = jax.random.split(jax.random.PRNGKey(0), rows)
    return np.asarray(
        sample(jnp.broadcast_to(jnp.asarray(logits, jnp.float32), (rows, len(logits))), keys, params(rows, **kw))
    )


def frequencies(ids, vocab):
    return np.bincount(ids, minlength=vocab) / len(ids)


def test_repetition_penalty_hand_computed():
    logits = jnp.array([[2.0, -1.0, 0.5, 3.0]])
    ids = jnp.array([[0, 1, 0, 3]])
    valid = jnp.array([[True, True, True, False]])  # id 3 is outside the window
    out = apply_repetition_penalty(logits, ids, valid, jnp.array([2.0]))
    # id 0 (seen twice) is divided once, id 1 (negative) multiplied, ids 2 and 3 untouched.
    np.testing.assert_array_equal(np.asarray(out), [[1.0, -2.0, 0.5, 3.0]])


def test_repetition_penalty_matches_transformers():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 50)).astype(np.float32)
    ids = rng.integers(0, 50, (3, 20))
    penalty = 1.3
    ref = RepetitionPenaltyLogitsProcessor(penalty)(torch.from_numpy(ids), torch.from_numpy(logits.copy())).numpy()
    out = apply_repetition_penalty(
        jnp.asarray(logits), jnp.asarray(ids), jnp.ones(ids.shape, bool), jnp.full((3,), penalty)
    )
    np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-6)


def test_nucleus_and_top_k_sets_equal_the_sorted_definitions():
    """Sort-free sets (threshold bisection) against the release's sort/cumsum rule, computed in numpy."""
    rng = np.random.default_rng(3)
    probs = np.asarray(
        jax.nn.softmax(jnp.asarray(rng.normal(size=(64, 300)) * rng.uniform(0.5, 4, (64, 1)), jnp.float32))
    )
    top_p = rng.uniform(0.05, 0.99, 64).astype(np.float32)
    top_k = rng.integers(1, 300, 64).astype(np.int32)
    order = np.argsort(-probs, axis=-1)
    sorted_probs = np.take_along_axis(probs, order, axis=-1)
    kept_sorted = (np.cumsum(sorted_probs, axis=-1) - sorted_probs) <= top_p[:, None]
    want_p = np.zeros_like(kept_sorted)
    np.put_along_axis(want_p, order, kept_sorted, axis=-1)
    want_k = np.zeros_like(kept_sorted)
    np.put_along_axis(want_k, order, np.arange(300)[None] < top_k[:, None], axis=-1)
    no_p, no_k = jnp.zeros(64), jnp.zeros(64, jnp.int32)
    got_p = np.asarray(kept_ids(jnp.asarray(probs), jnp.asarray(top_p), jnp.asarray(top_k)))  # top-p overrides top-k
    got_k = np.asarray(kept_ids(jnp.asarray(probs), no_p, jnp.asarray(top_k)))
    assert np.asarray(kept_ids(jnp.asarray(probs), no_p, no_k)).all()
    # Random data: no ties and no mass sitting exactly at p, so summation order cannot matter.
    np.testing.assert_array_equal(got_p, want_p)
    np.testing.assert_array_equal(got_k, want_k)
    assert 1 < got_p.sum(-1).mean() < 299


def test_top_p_keeps_the_smallest_prefix_reaching_p():
    probs = np.array([0.5, 0.3, 0.15, 0.05])
    ids = draws(np.log(probs), 8000, top_p=0.7)
    # Mass before id 1 is 0.5 <= 0.7 (kept); before id 2 it is 0.8 > 0.7 (dropped).
    np.testing.assert_allclose(frequencies(ids, 4), [0.625, 0.375, 0, 0], atol=0.03)


def test_top_p_overrides_top_k_and_top_k_alone():
    probs = np.array([0.5, 0.3, 0.15, 0.05])
    with_p = draws(np.log(probs), 8000, top_p=0.9, top_k=1)
    np.testing.assert_allclose(frequencies(with_p, 4), [0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0], atol=0.03)
    with_k = draws(np.log(probs), 8000, top_k=2)
    np.testing.assert_allclose(frequencies(with_k, 4), [0.625, 0.375, 0, 0], atol=0.03)


def test_temperature_and_full_distribution():
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    hot = draws(logits, 8000, temperature=2.0)  # softmax(logits / 2) = sqrt(p), normalised
    want = np.sqrt([0.5, 0.3, 0.15, 0.05])
    np.testing.assert_allclose(frequencies(hot, 4), want / want.sum(), atol=0.03)


def test_greedy_and_zero_temperature_take_the_argmax():
    logits = np.array([0.0, 3.0, 2.9, -1.0])
    assert (draws(logits, 64, greedy=True, top_p=0.9) == 1).all()
    assert (draws(logits, 64, temperature=0.0) == 1).all()


def test_masked_audio_ids_are_never_drawn():
    logits = jnp.zeros((256, 2050)).at[:, 2048:].set(50.0)
    masked = mask_ids_from(logits, 2048)
    keys = jax.random.split(jax.random.PRNGKey(1), 256)
    assert (np.asarray(sample(masked, keys, params(256))) < 2048).all()
    assert (np.asarray(sample(masked, keys, params(256, greedy=True))) < 2048).all()


def test_release_settings_names():
    s = SamplingSettings().updated(
        {"temp_text": 0.7, "top_k_audio": 250, "use_sampling": False, "repetition_penalty_window_text": 10}
    )
    assert (s.text_temperature, s.audio_top_k, s.greedy, s.text_repetition_window) == (0.7, 250, True, 10)
    for bad in ({"temperature": 1}, {"temp_text": "hot"}, {"use_sampling": 1}, {"top_k_text": 2.5}):
        with pytest.raises(SettingsError):
            SamplingSettings().updated(bad)
    with pytest.raises(SettingsError, match="penalty"):
        SamplingSettings(text_repetition_penalty=0.5).validate(max_window=128)
    with pytest.raises(SettingsError, match="window"):
        SamplingSettings(audio_repetition_window=500).validate(max_window=128)


def test_release_names_both_ways_and_from_a_query():
    s = SamplingSettings(text_temperature=0.7, audio_top_k=250, greedy=True)
    assert SamplingSettings().updated(s.release()) == s  # every setting has a release name, and back
    assert s.release()["use_sampling"] is False and s.release()["top_k_audio"] == 250
    query = {"temp_text": "0.7", "top_k_audio": "250", "use_sampling": "false", "token": "x", "text_topk": "25"}
    assert parse_release_settings(query) == {"temp_text": 0.7, "top_k_audio": 250.0, "use_sampling": False}
    assert SamplingSettings().updated(parse_release_settings(query)) == s  # Moshi's names and others ignored
    for bad in ({"temp_text": "hot"}, {"use_sampling": "maybe"}):
        with pytest.raises(SettingsError, match=next(iter(bad))):
            parse_release_settings(bad)
    with pytest.raises(SettingsError, match="finite"):
        SamplingSettings().updated(parse_release_settings({"temp_text": "nan"})).validate(max_window=64)
