"""Stages chain: each starts from the previous stage's parameters (trainer checkpoint or HF export) or
full state; learning rates follow the schedule's formula; what a run logs; checkpoints load and export."""

from __future__ import annotations

import json
import math

import jax
import numpy as np
import pytest

from flmjax import FLMAudio
from flmjax.cli import export as export_cli
from flmjax.config import get_model_config
from flmjax.interop.trainer_checkpoint import CheckpointError
from flmjax.train.checkpoint import export_checkpoint
from flmjax.train.config import TrainConfig, with_overrides
from flmjax.train.data import StageData
from flmjax.train.loop import run_stage, train
from flmjax.train.setup import setup_stage
from tests.synthetic_data import synthetic_batches

MODEL = get_model_config("tiny")


@pytest.fixture(autouse=True)
def _restore_compile_cache():
    """The trainer turns on JAX's persistent compilation cache (in the run root): undo that afterwards."""
    previous = jax.config.jax_compilation_cache_dir
    yield
    jax.config.update("jax_compilation_cache_dir", previous)


def _config(tmp_path, stage: str, **overrides) -> TrainConfig:
    base = {
        "stage": stage, "run_root": str(tmp_path), "model": "tiny", "numerics.dtype": "float32",
        "numerics.remat": "none",
        "data.global_batch": 4, "log.every_steps": 1, "log.progress": False, "log.eval_batches": 0,
        "checkpoint.every_steps": 100,
    }  # fmt: skip
    return with_overrides(TrainConfig(), [f"--{k}={v}" for k, v in {**base, **overrides}.items()])


def _data(seed: int, held_out: bool = False) -> StageData:
    eval_fn = (lambda: synthetic_batches(MODEL, 16, 8, 4, seed=99)) if held_out else None
    return StageData(train=synthetic_batches(MODEL, 16, 32, 4, seed=seed), samples_per_epoch=32, eval=eval_fn)


def _metrics(run_dir) -> list[dict]:
    return [json.loads(line) for line in open(f"{run_dir}/metrics.jsonl")]


def _lr(step, peak, end, warmup, total):
    if step < warmup:
        return peak * (step + 1) / warmup
    return end + 0.5 * (peak - end) * (1 + math.cos(math.pi * min(step - warmup, total - warmup) / (total - warmup)))


def _assert_same(a, b):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_stages_chain_from_each_other_and_follow_their_schedules(tmp_path, capsys):
    # Stage one: random start, 1 warmup step of 5, evaluations on a held-out split every 2 steps and at the end.
    first = _config(tmp_path, "one", steps=5, **{"init.random_ok": True, "optimizer.peak_lr": 2e-3,
                                                 "optimizer.end_lr": 2e-4, "optimizer.warmup_fraction": 0.2,
                                                 "log.eval_batches": 2, "log.eval_every_steps": 2})  # fmt: skip
    one = train(first, _data(0, held_out=True))
    assert (one.step, one.total_steps, one.preempted) == (5, 5, False)
    rows = _metrics(one.run_dir)
    train_rows = [r for r in rows if "loss" in r]
    assert [r["step"] for r in train_rows] == [1, 2, 3, 4, 5]
    for row in train_rows:  # the row of step s reports the update made at step s - 1
        assert row["lr"] == pytest.approx(_lr(row["step"] - 1, 2e-3, 2e-4, 1, 5), rel=1e-6)
    for key in ("semantic", "acoustic", "monologue", "wait", "semantic_acc", "codebook_7_acc", "grad_norm", "lr"):
        assert all(key in r for r in train_rows)
    assert "first_step_s" in train_rows[0] and all("tokens_per_s" in r and "step_s" in r for r in train_rows[1:])
    assert [r["step"] for r in rows if "eval_loss" in r] == [2, 4, 5]
    assert list((tmp_path / "one" / "tensorboard").iterdir())

    # Stage two starts from stage one's parameters (a trainer checkpoint) with a fresh optimizer.
    trained_one = FLMAudio.from_pretrained(one.run_dir)
    second = _config(tmp_path, "two", steps=4, **{"init.params_from": one.run_dir, "optimizer.peak_lr": 1e-3,
                                                  "optimizer.end_lr": 8e-4,
                                                  "optimizer.warmup_fraction": 0.0})  # fmt: skip
    stage = setup_stage(second, _data(1))
    assert stage.start_step == 0 and "parameters from" in stage.source
    _assert_same(stage.state.params, trained_one.params)
    assert all(float(np.abs(np.asarray(m)).max()) == 0 for m in jax.tree_util.tree_leaves(stage.state.opt_state[1].mu))
    two = run_stage(stage)
    for row in _metrics(two.run_dir):
        assert row["lr"] == pytest.approx(_lr(row["step"] - 1, 1e-3, 8e-4, 0, 4), rel=1e-6)

    # Stage three starts from stage two's HF-layout export.
    exported = export_checkpoint(two.run_dir, tmp_path / "export_two", dtype="float32")
    assert (exported / "config.json").exists()
    trained_two = FLMAudio.from_pretrained(two.run_dir)
    _assert_same(FLMAudio.from_pretrained(exported).params, trained_two.params)
    third = setup_stage(_config(tmp_path, "three", steps=2, **{"init.params_from": str(exported)}), _data(2))
    _assert_same(third.state.params, trained_two.params)
    # The export CLI in this process (its main(argv), as launch/export.py runs it): no second JAX start-up.
    capsys.readouterr()
    assert export_cli.main(["--checkpoint", two.run_dir, "--out", str(tmp_path / "bf16")]) == 0, capsys.readouterr().err
    bf16 = FLMAudio.from_pretrained(tmp_path / "bf16", dtype="bfloat16")
    _assert_same(bf16.params, jax.tree_util.tree_map(lambda p: p.astype("bfloat16"), trained_two.params))
    capsys.readouterr()
    returncode = export_cli.main(["--checkpoint", str(tmp_path), "--out", str(tmp_path / "none")])
    stderr = capsys.readouterr().err
    assert returncode == 2 and stderr.strip().count("\n") == 0 and "no flmjax checkpoint" in stderr

    # A full state (step, parameters, AdamW moments) continues stage one where it stopped.
    cont = setup_stage(_config(tmp_path, "one_more", steps=8, **{"init.state_from": one.run_dir}), _data(0))
    assert cont.start_step == 5 and "full state" in cont.source
    _assert_same(cont.state.params, trained_one.params)
    assert float(np.abs(np.asarray(cont.state.opt_state[1].mu["lm_head"])).max()) > 0

    # A checkpoint of another architecture is refused in one line.
    other = _config(tmp_path, "other", steps=2, **{"model": "demo", "init.params_from": one.run_dir})
    with pytest.raises(CheckpointError, match="checkpoint's model differs from the configured one in") as info:
        setup_stage(other, _data(0))
    assert "\n" not in str(info.value)
