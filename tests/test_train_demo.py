"""The demo end to end: `launch/train.py --config=demo` (shortened to a few steps per stage) trains the
demo model through post1 -> post2 -> ft1 -> ft2 on the demo corpus; every stage lowers the loss on its
own data (its parameters against those it started from, on the same batches), and the final export
loads with `FLMAudio.from_pretrained`."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from flmjax import FLMAudio, configs
from flmjax.data.pipeline import batch_dataset
from flmjax.train.data import prepared_roots
from flmjax.train.loss import flm_loss

REPO = Path(__file__).resolve().parents[1]
OVERRIDES = ["--steps=4", "--data.global_batch=2", "--log.eval_batches=0", "--log.tensorboard=false",
             "--checkpoint.every_steps=100"]  # fmt: skip


def _mean_loss(model: FLMAudio, batches) -> float:
    losses = []
    for batch in batches:
        text, audio = model.forward(batch["tokens"])
        losses.append(float(flm_loss(text, audio, batch["tokens"], batch["weights"], model.config.tokens)["loss"]))
    return float(np.mean(losses))


@pytest.mark.slow
def test_demo_chain_lowers_every_stage_loss_and_exports(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, str(REPO / "launch" / "train.py"), "--config=demo", *OVERRIDES],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "exported to runs/demo/export" in proc.stdout

    stages = configs.load("demo", OVERRIDES)
    runs = tmp_path / "runs" / "demo"
    before = FLMAudio.init(stages[0].model_config, seed=stages[0].init.seed)  # post1's random start
    for config in stages:
        data = config.data.replace(global_batch=2, seed=123)  # other batches than the run's first ones
        batches = list(itertools.islice(batch_dataset(data, prepared_roots(data), ids=before.config.tokens), 2))
        after = FLMAudio.from_pretrained(runs / config.stage)
        assert _mean_loss(after, batches) < _mean_loss(before, batches), config.stage
        before = after

    exported = FLMAudio.from_pretrained(runs / "export", dtype="bfloat16")
    for x, y in zip(jax.tree_util.tree_leaves(exported.params), jax.tree_util.tree_leaves(before.params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y.astype("bfloat16")))
