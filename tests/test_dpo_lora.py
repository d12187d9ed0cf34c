"""DPO with LoRA (BayLing-Duplex Table 4's ablation): pi is the frozen base + adapters, pi_ref the same
base with zero adapters. At initialisation (B = 0) the loss is log 2 and the margin 0 exactly; steps move
the adapters only and raise the margin on held-out pairs; resume is exact and the export merges."""

from __future__ import annotations

import dataclasses
import math

import jax
import numpy as np

from flmjax import FLMAudio
from flmjax.data.config import get_data_config
from flmjax.train.checkpoint import export_checkpoint
from flmjax.train.data import StageData
from flmjax.train.dpo import DPOConfig
from flmjax.train.loop import evaluate, train
from flmjax.train.setup import global_batch, learning_rate, setup_stage
from tests import test_lora_train
from tests.synthetic_data import synthetic_pair_batches
from tests.test_lora_train import MODEL, _config, stop_after

FRAMES = 32
base_dir = test_lora_train.base_dir  # the module-scoped fixtures, shared
_restore_compile_cache = test_lora_train._restore_compile_cache


def _dpo_config(tmp_path, base_dir, **changes):
    data = get_data_config("dpo", global_batch=4)
    return _config(tmp_path, base_dir, data=data, dpo=DPOConfig(), micro_batches=1, **changes)


def _data(seed=0) -> StageData:
    return StageData(
        synthetic_pair_batches(MODEL, FRAMES, 16, 4, seed=seed), 16,
        eval=lambda: synthetic_pair_batches(MODEL, FRAMES, 4, 4, seed=7),
    )  # fmt: skip


def _leaves(tree):
    return [np.asarray(x, np.float32) for x in jax.tree_util.tree_leaves(jax.device_get(tree))]


def test_at_initialisation_exact_then_steps_train_adapters_only_and_raise_margin(tmp_path, base_dir):
    log = dataclasses.replace(_config(tmp_path, base_dir).log, eval_batches=1)
    stage = setup_stage(_dpo_config(tmp_path, base_dir, log=log), _data())
    start = evaluate(stage)
    assert float(start["dpo_loss"]) == np.float32(math.log(2))
    assert float(start["reward_margin"]) == 0.0
    base, adapters = _leaves(stage.state.frozen), _leaves(stage.state.params)
    state = stage.state
    for step in range(3):
        state, metrics = stage.train_step(
            state, global_batch(stage, next(stage.data.train)), learning_rate(stage, step)
        )
        if step == 0:  # the training pass at B = 0: the same program for pi and pi_ref
            assert float(metrics["reward_margin"]) == 0.0
            assert float(metrics["dpo_loss"]) == np.float32(math.log(2))
    stage.state = state
    for x, y in zip(base, _leaves(state.frozen)):
        np.testing.assert_array_equal(x, y)  # the base (= pi_ref) untouched
    assert min(float(np.abs(x - y).max()) for x, y in zip(adapters, _leaves(state.params))) > 0
    assert float(evaluate(stage)["reward_margin"]) > 0  # held-out pairs


def test_resume_is_exact_and_the_export_merges(tmp_path, base_dir):
    straight = train(_dpo_config(tmp_path, base_dir, steps=4, run_dir=str(tmp_path / "straight")), _data())
    assert straight.step == 4
    config = _dpo_config(tmp_path, base_dir, steps=4, run_dir=str(tmp_path / "resumed"))
    stop_after(config, _data(), 2)
    resumed = train(config, _data())
    assert resumed.step == 4 and resumed.source.startswith("resumed")
    a, b = (FLMAudio.from_pretrained(tmp_path / r) for r in ("straight", "resumed"))  # merged
    for x, y in zip(_leaves(a.params), _leaves(b.params)):
        np.testing.assert_array_equal(x, y)
    merged = FLMAudio.from_pretrained(export_checkpoint(tmp_path / "straight", tmp_path / "merged", dtype="float32"))
    base = FLMAudio.from_pretrained(base_dir)
    moved = max(float(np.abs(x - y).max()) for x, y in zip(_leaves(merged.params), _leaves(base.params)))
    assert moved > 0  # the adapters merged into the base
