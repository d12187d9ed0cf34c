"""LoRA training: a step changes the adapters only, the optimizer holds adapter moments only, the base
stays frozen in the compute dtype; a resumed run ends where an uninterrupted one does; exports (merged
and adapters-only) give the adapted model's logits, and a wrong base is refused in one line."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flmjax import FLMAudio
from flmjax.config import LoraConfig, Numerics, get_model_config
from flmjax.interop.lora_file import LoraFileError
from flmjax.model import lora as lora_lib
from flmjax.train.checkpoint import export_adapters, export_checkpoint
from flmjax.train.config import CheckpointConfig, InitConfig, LogConfig, OptimizerConfig, TrainConfig
from flmjax.train.data import StageData
from flmjax.train.loop import train
from flmjax.train.setup import SetupError, global_batch, learning_rate, setup_stage
from tests.synthetic_data import synthetic_batches

MODEL = get_model_config("tiny")
LORA = LoraConfig(rank=4, targets=("attention", "mlp", "depformer", "audio_tables"))


@pytest.fixture(autouse=True)
def _restore_compile_cache():
    previous = jax.config.jax_compilation_cache_dir
    yield
    jax.config.update("jax_compilation_cache_dir", previous)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    """A random tiny model exported in the HF layout (fp32): the base the adapters train on."""
    out = tmp_path_factory.mktemp("base")
    FLMAudio.init("tiny", seed=5).save_pretrained(out)
    return out


def _config(tmp_path, base_dir, steps=6, **changes) -> TrainConfig:
    config = TrainConfig(
        stage="lora_test", run_root=str(tmp_path), model="base", numerics=Numerics(), steps=steps, micro_batches=2,
        init=InitConfig(params_from=str(base_dir)), lora=LORA,
        data=dataclasses.replace(TrainConfig().data, global_batch=4),
        optimizer=OptimizerConfig(peak_lr=1e-2, end_lr=1e-3),
        log=LogConfig(every_steps=1, progress=False, eval_batches=0, tensorboard=False),
        checkpoint=CheckpointConfig(every_steps=100),
    )  # fmt: skip
    return dataclasses.replace(config, **changes)


def _data(seed=0) -> StageData:
    return StageData(train=synthetic_batches(MODEL, 16, 32, 4, seed=seed), samples_per_epoch=32)


def _nbytes(tree) -> int:
    return sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(tree))


def test_a_step_trains_the_adapters_only(tmp_path, base_dir):
    stage = setup_stage(_config(tmp_path, base_dir, numerics=Numerics(dtype="bfloat16")), _data())
    state = stage.state
    base = FLMAudio.from_pretrained(base_dir).params
    # The base: frozen in the compute dtype, nothing of it in the optimizer.
    assert {x.dtype for x in jax.tree_util.tree_leaves(state.frozen)} == {jnp.dtype(jnp.bfloat16)}
    assert jax.tree_util.tree_structure(state.frozen) == jax.tree_util.tree_structure(base)
    adapters = _nbytes(state.params)
    assert {x.dtype for x in jax.tree_util.tree_leaves(state.params)} == {jnp.dtype(jnp.float32)}
    assert _nbytes(state.opt_state) < 2 * adapters + 64  # Adam's two moments of the adapters (+ counters)
    assert _nbytes(state.opt_state) >= 2 * adapters
    before = jax.device_get((state.params, state.frozen))
    new, metrics = stage.train_step(state, global_batch(stage, next(stage.data.train)), learning_rate(stage, 0))
    after = jax.device_get((new.params, new.frozen))
    for x, y in zip(jax.tree_util.tree_leaves(before[1]), jax.tree_util.tree_leaves(after[1])):
        np.testing.assert_array_equal(np.asarray(x, np.float32), np.asarray(y, np.float32))  # base untouched
    moved = [float(np.abs(x - y).max()) for x, y in zip(*map(jax.tree_util.tree_leaves, (before[0], after[0])))]
    assert min(moved) > 0  # every factor (A and B of every targeted weight) moved
    assert np.isfinite(float(metrics["loss"]))


def stop_after(config: TrainConfig, data: StageData, steps: int) -> None:
    """The run of `config` stopped after `steps` steps: a checkpoint (adapters, optimizer, data position)."""
    stage = setup_stage(config, data)
    for step in range(steps):
        batch = global_batch(stage, next(stage.data.train))
        stage.state, _ = stage.train_step(stage.state, batch, learning_rate(stage, step))
    stage.checkpoints.save(steps, stage.state, stage.data.train)
    stage.checkpoints.wait()
    stage.checkpoints.close()


def test_resume_is_exact_and_exports_give_the_adapted_logits(tmp_path, base_dir):
    straight = train(_config(tmp_path, base_dir, run_dir=str(tmp_path / "straight")), _data())
    assert straight.step == 6

    # The same run stopped after 3 steps (checkpoint, adapters + optimizer + data position) and resumed.
    config = _config(tmp_path, base_dir, run_dir=str(tmp_path / "resumed"))
    stop_after(config, _data(), 3)
    resumed = train(config, _data())
    assert resumed.step == 6 and resumed.source.startswith("resumed")
    a, b = (FLMAudio.from_pretrained(tmp_path / r) for r in ("straight", "resumed"))  # merged
    for x, y in zip(jax.tree_util.tree_leaves(a.params), jax.tree_util.tree_leaves(b.params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))

    # Merged export == base + adapters applied un-merged (fp32).
    merged = export_checkpoint(tmp_path / "straight", tmp_path / "merged", dtype="float32")
    file = export_adapters(tmp_path / "straight", tmp_path / "adapters.safetensors")
    assert file.stat().st_size < 0.5 * sum(p.stat().st_size for p in merged.glob("*.safetensors"))
    base = FLMAudio.from_pretrained(base_dir)
    from flmjax.interop.lora_file import read_adapters
    from flmjax.model.flm_audio import FLMAudioLM

    adapters, lora, meta = read_adapters(file)
    tokens = jnp.asarray(next(synthetic_batches(MODEL, 16, 32, 4, seed=7))["tokens"])
    want = FLMAudioLM(MODEL.replace(lora=lora)).apply({"params": base.params, lora_lib.LORA: adapters}, tokens)
    for got in (FLMAudio.from_pretrained(merged).forward(tokens), base.with_lora(file).forward(tokens)):
        for x, y in zip(got, want):
            assert float(jnp.max(jnp.abs(x - y)) / jnp.max(jnp.abs(y))) < 1e-6
    assert float(jnp.max(jnp.abs(want[1] - base.forward(tokens)[1]))) > 1e-3  # the adapters did something

    # The merged export in the official layout: the PyTorch reference loads it strictly (every tensor
    # name, no extra) and gives the adapted model's logits.
    import json

    import torch
    from safetensors.torch import load_file

    from flmjax.reference.flm_audio_torch import TorchFLMAudio

    reference = TorchFLMAudio(json.loads((merged / "config.json").read_text()))
    reference.load_state_dict(load_file(str(merged / "model.safetensors")), strict=True)
    with torch.no_grad():
        ref = reference.eval()(torch.from_numpy(np.asarray(tokens)).long())
    for x, y in zip(ref, want):
        assert float(np.abs(x.numpy() - np.asarray(y)).max() / np.abs(np.asarray(y)).max()) < 1e-5

    # The export CLI writes the same two outputs (the adapters-only file: what --lora reads).
    from flmjax.cli.export import main as export_main

    assert (
        export_main(["--checkpoint", str(tmp_path / "straight"), "--out", str(tmp_path / "cli"), "--adapters-only"])
        == 0
    )
    again = base.with_lora(tmp_path / "cli" / "adapters.safetensors").forward(tokens)
    np.testing.assert_array_equal(np.asarray(again[1]), np.asarray(base.with_lora(file).forward(tokens)[1]))

    # Adapters for another base: one line naming the file.
    other = FLMAudio.init("tiny", seed=6)
    with pytest.raises(LoraFileError, match=r"adapters.safetensors: adapters for base checkpoint \w+ .*this base is"):
        other.with_lora(file)


def test_lora_needs_a_base(tmp_path, base_dir):
    with pytest.raises(SetupError, match="init.params_from"):
        setup_stage(_config(tmp_path, base_dir, init=InitConfig(), model="tiny"), _data())
