"""The optimizer against optax's own AdamW and schedules, and the papers' Table 3 schedules."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from flmjax import configs
from flmjax.train.config import OptimizerConfig, with_overrides
from flmjax.train.optimizer import apply_learning_rate, learning_rate_schedule, make_optimizer


def _cosine(step, peak, end, warmup, total):
    """The schedule as the spec words it: linear warmup to the peak, then a half cosine down to the end."""
    if step < warmup:
        return peak * (step + 1) / warmup
    t = min(step - warmup, total - warmup) / (total - warmup)
    return end + 0.5 * (peak - end) * (1 + math.cos(math.pi * t))


@pytest.mark.parametrize(
    "stage, peak, end", [("post1", 2e-4, 1e-5), ("post2", 1e-5, 8e-6), ("ft1", 1e-5, 8e-6), ("ft2", 8e-6, 7e-6)]
)
def test_stage_schedules_are_table_3(stage, peak, end):
    (config,) = configs.load(stage)
    assert (config.optimizer.peak_lr, config.optimizer.end_lr) == (peak, end)
    assert config.data.global_batch == 256
    total = 1000
    schedule = learning_rate_schedule(config.optimizer, total)
    warmup = schedule.warmup
    assert warmup == 10  # 1% of the steps
    for step in (0, 5, warmup - 1, warmup, 300, 505, 999, 1000, 1200):
        assert schedule(step) == pytest.approx(_cosine(step, peak, end, warmup, total), rel=1e-12)
    assert schedule(warmup) == pytest.approx(peak)
    assert schedule(total) == pytest.approx(end)
    assert schedule((warmup + total) // 2) == pytest.approx((peak + end) / 2, rel=1e-3)


def test_schedule_equals_optax_cosine_after_warmup():
    config = OptimizerConfig(peak_lr=3e-4, end_lr=3e-5, warmup_fraction=0.05)
    schedule = learning_rate_schedule(config, 400)
    reference = optax.join_schedules(
        [optax.linear_schedule(3e-4 / 20, 3e-4, 19), optax.cosine_decay_schedule(3e-4, 380, alpha=0.1)], [20]
    )
    steps = np.arange(0, 420)
    np.testing.assert_allclose([schedule(int(s)) for s in steps], np.asarray(jax.vmap(reference)(steps)), rtol=2e-6)


def test_epochs_set_the_schedule_length():
    (config,) = configs.load("post1")
    assert config.total_steps(num_samples=10_000) == math.ceil(3.3 * 10_000 / 256)
    (ft2,) = configs.load("ft2")
    assert with_overrides(ft2, ["--steps=7"]).total_steps(num_samples=10_000) == 7


def test_update_equals_optax_adamw_with_clipping():
    """The step applies -lr itself; the result is exactly optax's clipped AdamW with the same mask."""
    config = OptimizerConfig(peak_lr=1e-3, end_lr=1e-4, warmup_fraction=0.0, weight_decay=0.1, clip_norm=0.5)
    key = jax.random.PRNGKey(0)
    params = {"w": jax.random.normal(key, (6, 5)), "b": jnp.arange(5.0), "norm": {"weight": jnp.ones(5)}}
    mask = lambda p: jax.tree_util.tree_map(lambda x: x.ndim >= 2, p)  # noqa: E731
    schedule = learning_rate_schedule(config, 10)
    rates = jnp.asarray([schedule(i) for i in range(10)], jnp.float32)
    reference = optax.chain(
        optax.clip_by_global_norm(0.5),
        optax.adamw(lambda count: rates[count], b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.1, mask=mask),
    )
    ours = make_optimizer(config)
    p_ref, s_ref = params, reference.init(params)
    p_ours, s_ours = params, ours.init(params)
    for step in range(4):
        # large: clipping acts
        grads = jax.tree_util.tree_map(lambda x, step=step: jnp.sin(x * (step + 1)) * 3.0, p_ref)
        u_ref, s_ref = reference.update(grads, s_ref, p_ref)
        p_ref = optax.apply_updates(p_ref, u_ref)
        u_ours, s_ours = ours.update(grads, s_ours, p_ours)
        p_ours = optax.apply_updates(p_ours, apply_learning_rate(u_ours, jnp.float32(schedule(step))))
        for a, b in zip(jax.tree_util.tree_leaves(p_ref), jax.tree_util.tree_leaves(p_ours)):
            np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-6, atol=1e-7)
