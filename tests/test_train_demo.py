"""The demo end to end: `launch/train.py --config=demo` (shortened to a few steps per stage) trains the
demo model through post1 -> post2 -> ft1 -> ft2 on the demo corpus; every stage lowers the loss on its
own data (its parameters against those it started from, on the same batches), and the final export
loads with `FLMAudio.from_pretrained`."""

from __future__ import annotations

import itertools

import jax
import numpy as np
import pytest

from flmjax import FLMAudio, configs
from flmjax.cli import train as train_cli
from flmjax.data.pipeline import batch_dataset
from flmjax.train.data import prepared_roots
from flmjax.train.loss import flm_loss

OVERRIDES = ["--steps=4", "--data.global_batch=2", "--log.eval_batches=0", "--log.tensorboard=false",
             "--checkpoint.every_steps=100"]  # fmt: skip


def _mean_loss(model: FLMAudio, batches) -> float:
    losses = []
    for batch in batches:
        text, audio = model.forward(batch["tokens"])
        losses.append(float(flm_loss(text, audio, batch["tokens"], batch["weights"], model.config.tokens)["loss"]))
    return float(np.mean(losses))


@pytest.mark.slow
def test_demo_chain_lowers_every_stage_loss_and_exports(tmp_path, monkeypatch, capsys):
    # launch/train.py's main(argv) in this process (no second JAX start-up), from tmp_path: the demo's paths
    # (runs/demo, its cache) are relative. The trainer turns on JAX's persistent compilation cache: undone after.
    monkeypatch.chdir(tmp_path)
    cache = jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs
    try:
        code = train_cli.main(["--config=demo", *OVERRIDES])
    finally:
        jax.config.update("jax_compilation_cache_dir", cache[0])
        jax.config.update("jax_persistent_cache_min_compile_time_secs", cache[1])
    out = capsys.readouterr()
    assert code == 0, out.out[-2000:] + out.err[-3000:]
    assert "exported to runs/demo/export" in out.out

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
