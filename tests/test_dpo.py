"""DPO (BayLing-Duplex Eq. 6-7): hand-computed cases, log 2 and zero margin at pi = pi_ref, gradient
accumulation, cached reference log-probabilities, and a few steps that raise the margin and the
chosen-over-rejected accuracy on held-out pairs."""

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flmjax.config import ConfigError, get_model_config
from flmjax.model.flm_audio import FLMAudioLM
from flmjax.sharding import make_mesh
from flmjax.train.config import OptimizerConfig
from flmjax.train.dpo import DPOConfig, DPOObjective, preference_losses, reference_log_probs
from flmjax.train.loss import LossCoefficients, sequence_log_probs
from flmjax.train.optimizer import make_optimizer
from flmjax.train.state import random_state, state_shardings
from flmjax.train.step import jit_train_step, make_eval_step, make_train_step
from tests.synthetic_data import synthetic_pair_batch
from tests.test_loss import IDS, L2, case

FRAMES = 32


def test_preference_losses_by_hand():
    out = preference_losses(jnp.array([-1.0, -4.0]), jnp.array([-3.0, -2.0]), jnp.array([-2.0, -2.0]),
                            jnp.array([-2.0, -2.0]), beta=0.5)  # fmt: skip
    np.testing.assert_allclose(out["chosen_reward"], [0.5, -1.0])
    np.testing.assert_allclose(out["rejected_reward"], [-0.5, 0.0])
    np.testing.assert_allclose(out["margin"], [1.0, -1.0])
    np.testing.assert_allclose(out["loss"], [math.log1p(math.exp(-1.0)), math.log1p(math.exp(1.0))], rtol=1e-6)


def test_sequence_log_probs_weight_positions_by_class_coefficient_unnormalised():
    text_logits, audio_logits, tokens, w = case(text_targets=[1, 3], speak_targets=[[0, 1], [1, 2]])
    coefficients = LossCoefficients(semantic=1.0, acoustic=0.5, monologue=2.0, wait=0.01)
    logp = sequence_log_probs(text_logits, audio_logits, tokens, w, IDS, coefficients)
    # semantic targets 0, 1: log2 + log4; acoustic 1 (log4; the pad id 2 never counts); monologue 1
    # (log4); <wait> (log8). Every term a sum over positions, not a mean.
    expected = -(1.0 * (L2 + 2 * L2) + 0.5 * 2 * L2 + 2.0 * 2 * L2 + 0.01 * 3 * L2)
    assert float(logp[0]) == pytest.approx(expected, rel=1e-6)
    w = w.copy()
    w[0, 1, 1] = 0.5  # half a position weight halves its share
    half = sequence_log_probs(text_logits, audio_logits, tokens, w, IDS, coefficients)
    assert float(half[0]) == pytest.approx(expected + 0.5 * L2, rel=1e-6)


def test_dpo_config_checks():
    with pytest.raises(ConfigError, match="beta"):
        DPOConfig(beta=0.0)
    with pytest.raises(ConfigError, match="lambda_ftx"):
        DPOConfig(lambda_ftx=-1.0)


@pytest.fixture(scope="module")
def setup():
    config = get_model_config("tiny")
    optimizer = make_optimizer(OptimizerConfig(peak_lr=1e-3, end_lr=1e-3, warmup_fraction=0.0, weight_decay=0.0))
    mesh = make_mesh(1, 1, 1, devices=jax.devices()[:1])
    state = jax.device_get(random_state(config, optimizer, mesh, seed=0))
    return config, optimizer, mesh, state


OBJECTIVE = DPOObjective(DPOConfig(beta=0.5, lambda_ftx=0.5))
_STEPS: dict[tuple[int, bool], Callable] = {}


def _jitted_step(config, optimizer, mesh, micro_batches, with_ref=True):
    """Compiled once per variant for the whole module (compiling dominates these tests' time)."""
    if (micro_batches, with_ref) not in _STEPS:
        shardings = state_shardings(config, optimizer, mesh)
        step = make_train_step(config, optimizer, OBJECTIVE, micro_batches, mesh)
        _STEPS[micro_batches, with_ref] = jit_train_step(step, shardings, mesh, (shardings.params,) if with_ref else ())
    return _STEPS[micro_batches, with_ref]


def _rounding_bound(config, params, batch):
    """How far the margin can be from 0 at pi = pi_ref in float32: the step computes log pi inside the
    gradient and log pi_ref outside it, two fusions of one computation whose sums of ~10^3 positions
    may differ by a few ulps of their size (4 here) on each side, scaled by beta."""
    ref = jax.jit(lambda p, b: reference_log_probs(FLMAudioLM(config), p, b))(params, batch)
    ulp = float(np.finfo(np.float32).eps * max(np.max(np.abs(v)) for v in ref.values()))
    return OBJECTIVE.dpo.beta * 2 * 4 * ulp


def test_at_initialisation_loss_is_log2_and_margin_zero(setup):
    config, optimizer, mesh, state = setup
    batch = synthetic_pair_batch(config, FRAMES, range(4))
    _, m = _jitted_step(config, optimizer, mesh, 1)(jax.device_put(state), batch, jnp.float32(1e-3), state.params)
    bound = _rounding_bound(config, state.params, batch)
    assert bound < 1e-3  # rounding, far below the margins training produces (> 0.5 below)
    assert abs(float(m["reward_margin"])) <= bound
    # -log sigmoid(m) = log 2 - m/2 + O(m^2): the loss is log 2 to half the margin's rounding.
    assert float(m["dpo_loss"]) == pytest.approx(math.log(2), abs=bound / 2)
    assert float(m["loss"]) == pytest.approx(float(m["dpo_loss"]) + 0.5 * float(m["sft"]), rel=1e-6)
    assert float(m["sft"]) > 0 and float(m["sft_semantic_tokens"]) > 0


def test_gradient_accumulation_is_exact(setup):
    # A reference away from the policy, so the margin and the DPO gradient are not rounding noise.
    config, optimizer, mesh, state = setup
    noise = jax.tree_util.tree_map(lambda x: 0.02 * np.random.default_rng(1).standard_normal(x.shape), state.params)
    reference = jax.tree_util.tree_map(lambda x, n: (x + n).astype(x.dtype), state.params, noise)
    batch = synthetic_pair_batch(config, FRAMES, range(4))
    lr = jnp.float32(1e-3)
    _, m1 = _jitted_step(config, optimizer, mesh, 1)(jax.device_put(state), batch, lr, reference)
    _, m2 = _jitted_step(config, optimizer, mesh, 2)(jax.device_put(state), batch, lr, reference)
    assert abs(float(m1["reward_margin"])) > 1e-2, m1
    for key in ("loss", "dpo_loss", "sft", "reward_margin", "grad_norm"):
        np.testing.assert_allclose(float(m2[key]), float(m1[key]), rtol=1e-5, atol=1e-7, err_msg=key)


def test_cached_reference_log_probs_give_the_same_step(setup):
    config, optimizer, mesh, state = setup
    batch = synthetic_pair_batch(config, FRAMES, range(4, 8))
    cached = {**batch, **jax.jit(lambda p, b: reference_log_probs(FLMAudioLM(config), p, b))(state.params, batch)}
    lr = jnp.float32(1e-3)
    _, on_the_fly = _jitted_step(config, optimizer, mesh, 1)(jax.device_put(state), batch, lr, state.params)
    _, given = _jitted_step(config, optimizer, mesh, 1, with_ref=False)(jax.device_put(state), cached, lr)
    # The reference log-probabilities are float32 sums of ~10^3 positions, computed here by two programs
    # that add in different orders: they may differ by an ulp of their size, and the margin by beta
    # times that for each side; the rest of the step is the same.
    ulp = float(np.finfo(np.float32).eps * np.max(np.abs(cached["chosen_ref_logp"])))
    for key in ("dpo_loss", "reward_margin"):
        np.testing.assert_allclose(float(given[key]), float(on_the_fly[key]), atol=2 * 0.5 * ulp, err_msg=key)
    np.testing.assert_allclose(float(given["sft"]), float(on_the_fly["sft"]), rtol=1e-6)


def test_a_few_steps_raise_margin_and_accuracy_on_held_out_pairs(setup):
    config, optimizer, mesh, state = setup
    shardings = state_shardings(config, optimizer, mesh)
    step = _jitted_step(config, optimizer, mesh, 1)
    evaluate = make_eval_step(config, shardings.params, mesh, OBJECTIVE, (shardings.params,))
    held_out = synthetic_pair_batch(config, FRAMES, range(1000, 1016))
    reference = state.params

    def metrics(params):
        return jax.device_get(OBJECTIVE.metrics(evaluate(params, held_out, reference)))

    before = metrics(reference)
    current = jax.device_put(state)
    for i in range(8):
        current, _ = step(current, synthetic_pair_batch(config, FRAMES, range(4 * i, 4 * i + 4)), jnp.float32(1e-3),
                          reference)  # fmt: skip
    after = metrics(current.params)
    assert before["reward_margin"] == pytest.approx(0.0, abs=1e-6) and before["chosen_accuracy"] == 0.0
    assert after["reward_margin"] > 0.5, after
    assert after["chosen_accuracy"] >= 0.9, after
    assert after["dpo_loss"] < math.log(2)


@pytest.fixture()
def _restore_compile_cache():
    """The trainer turns on JAX's persistent compilation cache (in the run root): undo that afterwards."""
    previous = jax.config.jax_compilation_cache_dir
    yield
    jax.config.update("jax_compilation_cache_dir", previous)


@pytest.mark.slow
def test_a_dpo_stage_trains_evaluates_and_its_reference_is_its_start(tmp_path, _restore_compile_cache):
    import json

    from flmjax.data.config import get_data_config
    from flmjax.train.config import TrainConfig, with_overrides
    from flmjax.train.data import StageData
    from flmjax.train.loop import train
    from tests.synthetic_data import synthetic_pair_batches

    config = get_model_config("tiny")

    def stage(name, steps, **init):
        settings = {"stage": name, "run_root": str(tmp_path), "model": "tiny", "numerics.dtype": "float32",
                    "numerics.remat": "none", "steps": steps, "log.every_steps": 1, "log.progress": False,
                    "log.tensorboard": False, "log.eval_batches": 1, "log.eval_every_steps": 0,
                    "optimizer.peak_lr": 1e-3, "optimizer.warmup_fraction": 0.0, **init}  # fmt: skip
        base = TrainConfig(data=get_data_config("dpo", global_batch=4), dpo=DPOConfig())
        cfg = with_overrides(base, [f"--{k}={v}" for k, v in settings.items()])
        data = StageData(synthetic_pair_batches(config, FRAMES, 16, 4), 16,
                         eval=lambda: synthetic_pair_batches(config, FRAMES, 4, 4, seed=7))  # fmt: skip
        result = train(cfg, data)
        return result, [json.loads(line) for line in open(f"{result.run_dir}/metrics.jsonl")]

    # pi and pi_ref are the same parameters in two arrays here, so two fusions of one computation: the
    # log-probabilities (|log pi| <= ~ FRAMES x 9 streams x log 2050 at initialisation) agree to a few ulps.
    margin_tol = 2 * 0.5 * 4 * float(np.finfo(np.float32).eps) * FRAMES * 9 * math.log(2050)
    first, rows = stage("dpo_a", 3, **{"init.random_ok": True})
    assert rows[0]["dpo_loss"] == pytest.approx(math.log(2), abs=margin_tol / 2)
    assert abs(rows[0]["reward_margin"]) <= margin_tol
    assert rows[-1]["eval_reward_margin"] > 0 and "eval_chosen_accuracy" in rows[-1]  # held-out pairs
    second, rows = stage("dpo_b", 1, **{"init.params_from": first.run_dir})
    assert "parameters from" in second.source
    assert abs(rows[0]["reward_margin"]) <= margin_tol  # pi_ref = the stage's start, not post1's random one
    with pytest.raises(ConfigError, match="go together"):
        TrainConfig(data=get_data_config("dpo"))
