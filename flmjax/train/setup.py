"""Wire one stage: distributed runtime -> mesh -> abstract model -> optimizer -> checkpoint manager ->
data iterator -> train state (restored or initialised) -> compiled steps. The loop only loops."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
import optax
from jax.sharding import Mesh

from flmjax import storage
from flmjax.config import ConfigError, LoraConfig, ModelConfig
from flmjax.data.config import DEMO_DIR
from flmjax.errors import FlmjaxError
from flmjax.interop import trainer_checkpoint
from flmjax.interop.hf import load_hf_params
from flmjax.interop.qwen import load_qwen_lm
from flmjax.model import lora as lora_lib
from flmjax.model.pretrained import abstract_params
from flmjax.model.vocab import grow_text_vocab, grows_text_vocab
from flmjax.sharding import make_mesh
from flmjax.train import checkpoint as ckpt
from flmjax.train.config import TrainConfig
from flmjax.train.data import StageData, open_stage_data
from flmjax.train.dpo import DPOObjective
from flmjax.train.optimizer import LearningRateSchedule, learning_rate_schedule, make_optimizer
from flmjax.train.state import (
    TrainState,
    abstract_state,
    batch_sharding,
    random_state,
    replicated,
    state_from_params,
)
from flmjax.train.step import (
    Batch,
    FLMObjective,
    Objective,
    jit_train_step,
    make_eval_step,
    make_train_step,
    model_params,
)


class SetupError(FlmjaxError):
    """A stage that cannot start: nothing to start from, missing data or paths. One line for the user."""


@dataclasses.dataclass
class Stage:
    config: TrainConfig
    model: ModelConfig
    mesh: Mesh
    total_steps: int
    schedule: LearningRateSchedule
    state: TrainState
    start_step: int
    source: str  # where the state came from, for the user
    train_step: Callable
    eval_step: Callable
    objective: Objective
    data: StageData
    checkpoints: ckpt.RunCheckpoints


def initialize_distributed(config: TrainConfig) -> None:
    """Multi-host runs: `distributed=True` or JAX's coordinator variables (JAX_COORDINATOR_ADDRESS,
    JAX_NUM_PROCESSES, JAX_PROCESS_ID), or a cluster JAX detects (TPU pods, SLURM)."""
    if (config.distributed or os.environ.get("JAX_COORDINATOR_ADDRESS")) and not jax.distributed.is_initialized():
        jax.distributed.initialize()


def enable_compile_cache(config: TrainConfig) -> None:
    """Reuse compiled programs across restarts and chained stages (the step does not depend on the stage)."""
    if config.compile_cache:
        cache = os.path.join(config.run_root, "jax_cache")  # JAX takes a gs:// folder too (through etils.epath)
        jax.config.update("jax_compilation_cache_dir", storage.absolute(cache))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def check_can_start(config: TrainConfig) -> None:
    """Fail at once, in one line, when a stage has no state to start from or no real data."""
    if trainer_checkpoint.is_trainer_checkpoint(config.resolved_run_dir):
        return  # resuming this run
    init = config.init
    for field in ("state_from", "params_from", "qwen_from"):
        path = getattr(init, field)
        if path and not storage.exists(path):
            raise SetupError(f"{config.stage}: init.{field}={path} does not exist")
    needs = []
    if not (init.state_from or init.params_from or init.qwen_from or init.random_ok):
        needs.append(f"a start ({init.start_hint})")
    reads_demo = any(
        c.manifest and not storage.is_remote(c.manifest) and Path(c.manifest).resolve().is_relative_to(DEMO_DIR)
        for c in config.data.corpora
    )
    if reads_demo and not config.demo_data_ok:
        needs.append(
            "data (its corpora are the demo corpus: --data.corpora name=NAME,prepared=DIR ... "
            "with folders from launch/prepare_data.py)"
        )
    if needs:
        raise SetupError(f"{config.stage} needs " + " and ".join(needs))


def resolve_micro_batches(config: TrainConfig, mesh: Mesh) -> int:
    """The micro-batch count (-1: one sequence per batch shard); each micro-batch must split evenly
    over the data x fsdp devices."""
    shards = mesh.shape["data"] * mesh.shape["fsdp"]
    batch = config.data.global_batch
    micro = batch // shards if config.micro_batches == -1 else config.micro_batches
    if micro < 1 or batch % micro or (batch // micro) % shards:
        raise ConfigError(
            f"data.global_batch {batch} in {config.micro_batches} micro-batches does not split over "
            f"data x fsdp = {shards} devices"
        )
    return micro


def _initial_state(
    config: TrainConfig,
    model: ModelConfig,
    optimizer: optax.GradientTransformation,
    mesh: Mesh,
    target: TrainState,
    checkpoints: ckpt.RunCheckpoints,
    data: StageData,
) -> tuple[TrainState, str]:
    """The restore order: this run's latest checkpoint, a full state, parameters only, Qwen, random.

    LoRA: the base comes from `init.params_from` (fresh or resumed; a resumed run checks it is the base
    its adapters were trained on), the adapters from this run's checkpoint or fresh."""
    init = config.init
    if model.lora is not None:
        return _lora_state(config, model, model.lora, optimizer, mesh, target, checkpoints, data)
    if checkpoints.latest_step() is not None:
        return checkpoints.restore_latest(
            target, data.train
        ), f"resumed {checkpoints.directory}/{checkpoints.latest_step()}"
    if init.state_from:
        ckpt.check_same_model(init.state_from, trainer_checkpoint.model_config_of(init.state_from), model)
        return ckpt.restore_state(init.state_from, target, data.train), f"full state from {init.state_from}"
    if init.params_from:
        return state_from_params(_load_params(init.params_from, model, target.params), model, optimizer, mesh), (
            f"parameters from {init.params_from}"
        )
    state = random_state(model, optimizer, mesh, init.seed)
    if init.qwen_from:  # the LM from Qwen, the audio tables and depformer fresh (AdamW's state is zeros either way)
        state = state.replace(params=load_qwen_lm(init.qwen_from, model, state.params))
        return state, f"Qwen LM weights from {init.qwen_from} (audio tables and depformer: seed {init.seed})"
    return state, f"random parameters (seed {init.seed})"


def _lora_state(
    config: TrainConfig,
    model: ModelConfig,
    lora: LoraConfig,  # model.lora
    optimizer: optax.GradientTransformation,
    mesh: Mesh,
    target: TrainState,
    checkpoints: ckpt.RunCheckpoints,
    data: StageData,
) -> tuple[TrainState, str]:
    base_path = config.init.params_from
    if not base_path or config.init.state_from or config.init.qwen_from:
        raise SetupError(
            f"{config.stage}: LoRA adapts a base given as init.params_from=DIR (an HF-layout export or a run)"
        )
    base = jax.tree_util.tree_map(
        lambda x, t: jax.device_put(x, t.sharding), _load_params(base_path, model, target.frozen), target.frozen
    )
    fingerprint = lora_lib.fingerprint(base)
    checkpoints.set_lora(lora, storage.absolute(base_path), fingerprint)
    rank = f"LoRA rank {lora.rank} ({', '.join(lora.targets)})"
    if checkpoints.latest_step() is not None:
        saved = (checkpoints.read_latest_meta().get("lora") or {}).get("base_fingerprint")
        if saved != fingerprint:
            raise SetupError(
                f"{checkpoints.directory}: adapters trained on a base with fingerprint {saved}, "
                f"but init.params_from={base_path} has {fingerprint}"
            )
        state = checkpoints.restore_latest(target, data.train).replace(frozen=base)
        return state, f"resumed {checkpoints.directory}/{checkpoints.latest_step()}: {rank} on {base_path}"
    state = state_from_params(base, model, optimizer, mesh, config.init.seed)
    return state, f"{rank}, fresh adapters (seed {config.init.seed}) on {base_path} (fingerprint {fingerprint})"


def _load_params(path: str, model: ModelConfig, target: Any) -> Any:
    """Parameters of a trainer checkpoint (onto the mesh directly) or of an HF-layout export (via host),
    in the dtype of `target`'s arrays. A checkpoint without the configured model's state tokens (the same
    model, a smaller text vocabulary) loads with its vocabulary grown (`flmjax.model.vocab`)."""
    if trainer_checkpoint.is_trainer_checkpoint(path):
        saved = trainer_checkpoint.model_config_of(path)
    elif storage.exists(os.path.join(path, "config.json")):
        saved = ModelConfig.from_json_file(os.path.join(path, "config.json"))
    else:
        raise SetupError(f"init.params_from={path}: neither an flmjax checkpoint nor an HF-layout directory")
    grow = grows_text_vocab(saved, model)
    source = model.replace(tokens=saved.tokens) if grow else model  # only the vocabulary differs
    if not grow:
        ckpt.check_same_model(path, saved, model)
    if trainer_checkpoint.is_trainer_checkpoint(path):
        params = trainer_checkpoint.restore_params(path, target if not grow else _on_one_device(source))
    else:
        params = load_hf_params(
            storage.local_folder(path),
            source,
            abstract_params(source),
            np.dtype(jax.tree_util.tree_leaves(target)[0].dtype),
        )
    if not grow:
        return params
    params = grow_text_vocab(params, saved, model)
    return jax.tree_util.tree_map(lambda p, t: jax.device_put(p.astype(t.dtype), t.sharding), params, target)


def _on_one_device(config: ModelConfig) -> Any:
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree_util.tree_map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device), abstract_params(config)
    )


def _reference_params(
    config: TrainConfig, model: ModelConfig, optimizer: optax.GradientTransformation, mesh: Mesh, target: TrainState
) -> Any:
    """DPO's frozen pi_ref: the parameters the stage starts from (`init.params_from`, or the random
    start of `init.seed`), read again when a run resumes: never the resumed parameters. A copy on the
    mesh beside the trained ones (the step donates its state, never the reference)."""
    if config.init.params_from:
        return _load_params(config.init.params_from, model, target.params)
    if config.init.random_ok and not (config.init.state_from or config.init.qwen_from):
        return random_state(model, optimizer, mesh, config.init.seed).params
    raise SetupError(f"{config.stage}: DPO's reference is the stage's start: give --init.params_from=DIR")


def setup_stage(config: TrainConfig, data: StageData | None = None) -> Stage:
    """Everything a stage's loop needs. `data` replaces the stage's configured pipeline (tests)."""
    if data is None:
        check_can_start(config)  # before anything global changes (distributed runtime, compilation cache)
    initialize_distributed(config)
    enable_compile_cache(config)
    model = config.model_config
    if data is None:
        data = open_stage_data(config, model.tokens)
    m = config.mesh
    try:
        mesh = make_mesh(m.data, m.fsdp, m.tensor)
    except ValueError as e:
        raise ConfigError(f"mesh: {e}") from None
    micro_batches = resolve_micro_batches(config, mesh)
    total = config.total_steps(data.samples_per_epoch)
    schedule = learning_rate_schedule(config.optimizer, total)
    optimizer = make_optimizer(config.optimizer)
    checkpoints = ckpt.RunCheckpoints(config.resolved_run_dir, config.checkpoint, model, config.stage)
    target = abstract_state(model, optimizer, mesh)
    state, source = _initial_state(config, model, optimizer, mesh, target, checkpoints, data)
    shardings = jax.tree_util.tree_map(lambda a: a.sharding, target)
    objective: Objective = FLMObjective(config.loss)
    reference: tuple = ()  # the steps' context: DPO's frozen reference parameters
    if config.dpo is not None:
        # with LoRA, pi_ref is the frozen base itself (zero adapters): no second copy of the parameters
        objective = DPOObjective(config.dpo, config.loss, base_reference=model.lora is not None)
        if model.lora is None:
            reference = (_reference_params(config, model, optimizer, mesh, target),)
    context = tuple(shardings.params for _ in reference)
    step_fn = make_train_step(model, optimizer, objective, micro_batches, mesh)
    train_step = jit_train_step(step_fn, shardings, mesh, context)
    eval_step = make_eval_step(model, model_params(shardings), mesh, objective, context)
    return Stage(
        config=config,
        model=model,
        mesh=mesh,
        total_steps=total,
        schedule=schedule,
        state=state,
        start_step=int(jax.device_get(state.step)),
        source=source,
        train_step=lambda state, batch, lr: train_step(state, batch, lr, *reference),
        eval_step=lambda params, batch: eval_step(params, batch, *reference),
        objective=objective,
        data=data,
        checkpoints=checkpoints,
    )


def learning_rate(stage: Stage, step: int) -> jax.Array:
    """The rate of the update made at `step`, as a replicated device scalar (one value on every host)."""
    return jax.device_put(np.float32(stage.schedule(step)), replicated(stage.mesh))


def global_batch(stage: Stage, host_batch: Batch) -> Batch:
    """This host's share -> one global array per field, split over the mesh's batch axes."""
    sharding = batch_sharding(stage.mesh)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in host_batch.items()}
