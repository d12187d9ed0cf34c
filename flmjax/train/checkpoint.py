"""Orbax checkpoints of a run: parameters, optimizer state, the data iterator's position and metadata.

A run directory holds `checkpoints/<step>/` with four items:
  params     fp32 parameters (StandardSave; restored into any mesh's shardings)
  opt_state  optimizer moments and counters
  data       the Grain iterator state, one JSON file per host (grain's Orbax handler)
  meta       JSON: step, stage, and the model's `config.json` (so a checkpoint describes its model)
Step N holds the state after N optimizer updates. Saves are asynchronous; the newest `keep` are kept.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp

from flmjax.config import ModelConfig
from flmjax.model.pretrained import FLMAudio, abstract_params
from flmjax.train.config import CheckpointConfig
from flmjax.train.state import TrainState

CHECKPOINTS = "checkpoints"


class CheckpointError(ValueError):
    """A path that holds no usable flmjax checkpoint, or one that does not fit the model."""


def _step_dirs(root: Path) -> list[Path]:
    return sorted((p for p in root.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))


def locate_step_dir(path: str | os.PathLike) -> Path:
    """The step directory a path names: a step directory itself, or the newest step of a run directory
    (`<run>/checkpoints/<step>`) or of a checkpoints directory. Absolute, as Orbax requires."""
    path = Path(path).resolve()
    if (path / "meta").is_dir() and (path / "params").is_dir():
        return path
    root = path / CHECKPOINTS if (path / CHECKPOINTS).is_dir() else path
    steps = _step_dirs(root) if root.is_dir() else []
    complete = [s for s in steps if (s / "meta").is_dir() and (s / "params").is_dir()]
    if not complete:
        raise CheckpointError(f"{path}: no flmjax checkpoint (expected a run directory or a step directory)")
    return complete[-1]


def is_trainer_checkpoint(path: str | os.PathLike) -> bool:
    try:
        locate_step_dir(path)
    except CheckpointError:
        return False
    return True


def _composite() -> ocp.Checkpointer:
    return ocp.Checkpointer(ocp.CompositeCheckpointHandler())


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    step_dir = locate_step_dir(path)
    return _composite().restore(step_dir, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]


def model_config_of(path: str | os.PathLike, **runtime: Any) -> ModelConfig:
    """The architecture a checkpoint was trained with (run-time numerics from `runtime`)."""
    return ModelConfig.from_hf_dict(read_meta(path)["model"], **runtime)


def check_same_model(path: str | os.PathLike, saved: ModelConfig, wanted: ModelConfig) -> None:
    saved_fields, wanted_fields = saved.to_hf_dict(), wanted.to_hf_dict()
    diff = sorted(k for k, v in wanted_fields.items() if saved_fields.get(k) != v)
    if diff:
        raise CheckpointError(f"{path}: checkpoint's model differs from the configured one in {', '.join(diff)}")


def restore_params(path: str | os.PathLike, target: Any) -> Any:
    """Parameters only, into `target` (ShapeDtypeStructs with shardings: any mesh)."""
    step_dir = locate_step_dir(path)
    restored = _composite().restore(step_dir, args=ocp.args.Composite(params=ocp.args.StandardRestore(target)))
    return restored["params"]


def restore_state(path: str | os.PathLike, target: TrainState, data_iterator: Any | None = None) -> TrainState:
    """A full train state (and the data iterator's position, when given) from another run's checkpoint."""
    step_dir = locate_step_dir(path)
    return _restore(_composite(), step_dir, target, data_iterator)


def _restore(checkpointer, step_dir: Path, target: TrainState, data_iterator: Any | None) -> TrainState:
    args = dict(
        params=ocp.args.StandardRestore(target.params),
        opt_state=ocp.args.StandardRestore(target.opt_state),
        meta=ocp.args.JsonRestore(),
    )
    if data_iterator is not None:
        args["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
    restored = checkpointer.restore(step_dir, args=ocp.args.Composite(**args))
    step = jax.device_put(np.int32(restored["meta"]["step"]), target.step.sharding)
    return TrainState(step=step, params=restored["params"], opt_state=restored["opt_state"])


def load_params_for_inference(path: str | os.PathLike, dtype: str, **runtime: Any) -> tuple[ModelConfig, dict]:
    """(ModelConfig, parameters on this host's first device in `param_dtype`) of a trainer checkpoint: what
    `FLMAudio.from_pretrained` needs."""
    runtime.setdefault("param_dtype", dtype)
    meta = read_meta(path)
    config = ModelConfig.from_hf_dict(meta["model"], dtype=dtype, **runtime)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree_util.tree_map(
        lambda a: jax.ShapeDtypeStruct(a.shape, np.dtype(meta["param_dtype"]), sharding=device), abstract_params(config)
    )
    params = restore_params(path, target)
    return config, jax.tree_util.tree_map(lambda p: p.astype(config.param_dtype), params)


class RunCheckpoints:
    """The checkpoint manager of one run directory."""

    def __init__(self, run_dir: str | os.PathLike, config: CheckpointConfig, model: ModelConfig, stage: str):
        options = ocp.CheckpointManagerOptions(
            max_to_keep=config.keep, enable_async_checkpointing=config.async_save, create=True
        )
        self.directory = Path(run_dir) / CHECKPOINTS
        self.manager = ocp.CheckpointManager(self.directory, options=options)
        self._meta = {"stage": stage, "model": model.to_hf_dict(), "param_dtype": model.param_dtype}

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: TrainState, data_iterator: Any | None) -> None:
        """Start saving `state` (after `step` updates) and the data iterator's position; returns before
        the arrays are written."""
        if step in self.manager.all_steps():
            return
        items = dict(
            params=ocp.args.StandardSave(state.params),
            opt_state=ocp.args.StandardSave(state.opt_state),
            meta=ocp.args.JsonSave({**self._meta, "step": step}),
        )
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
        self.manager.save(step, args=ocp.args.Composite(**items), force=True)

    def restore_latest(self, target: TrainState, data_iterator: Any) -> TrainState:
        step = self.latest_step()
        if step is None:
            raise CheckpointError(f"{self.directory}: no checkpoint to resume from")
        return _restore(_composite(), self.directory / str(step), target, data_iterator)

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()


def export_checkpoint(path: str | os.PathLike, out_dir: str | os.PathLike, dtype: str = "bfloat16") -> Path:
    """Write a trainer checkpoint (run or step directory) in the release's HF layout."""
    step_dir = locate_step_dir(path)
    FLMAudio.from_pretrained(step_dir, dtype=read_meta(step_dir)["param_dtype"]).save_pretrained(out_dir, dtype=dtype)
    return Path(out_dir)
