"""Orbax checkpoints of a run: writing them (parameters, optimizer state, the data iterator's position and
metadata), resuming a train state, and exporting one in the release's layout.

The layout of a run directory and the reading of its parameters are `flmjax.interop.trainer_checkpoint`'s
(the model loads trainer checkpoints without knowing of training). Saves are asynchronous; the newest
`keep` are kept.
A LoRA run's `params` are its adapters; `meta.lora` names their settings and the base they adapt
(its path and fingerprint), which inference and exports load and check.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp

from flmjax import storage
from flmjax.config import LoraConfig, ModelConfig
from flmjax.interop import lora_file
from flmjax.interop.trainer_checkpoint import (
    CHECKPOINTS,
    CheckpointError,
    composite_checkpointer,
    locate_step_dir,
    read_meta,
)
from flmjax.model.pretrained import FLMAudio, restore_adapters
from flmjax.train.config import CheckpointConfig
from flmjax.train.state import TrainState


def check_same_model(path: str | os.PathLike, saved: ModelConfig, wanted: ModelConfig) -> None:
    saved_fields, wanted_fields = saved.to_hf_dict(), wanted.to_hf_dict()
    diff = sorted(k for k, v in wanted_fields.items() if saved_fields.get(k) != v)
    if diff:
        raise CheckpointError(f"{path}: checkpoint's model differs from the configured one in {', '.join(diff)}")


def restore_state(path: str | os.PathLike, target: TrainState, data_iterator: Any | None = None) -> TrainState:
    """A full train state (and the data iterator's position, when given) from another run's checkpoint."""
    step_dir = locate_step_dir(path)
    return _restore(composite_checkpointer(), step_dir, target, data_iterator)


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


class RunCheckpoints:
    """The checkpoint manager of one run directory (a local folder, or gs://...: Orbax writes the arrays
    through TensorStore's gcs driver and the rest through `etils.epath`)."""

    def __init__(self, run_dir: str | os.PathLike, config: CheckpointConfig, model: ModelConfig, stage: str):
        options = ocp.CheckpointManagerOptions(
            max_to_keep=config.keep, enable_async_checkpointing=config.async_save, create=True
        )
        self.directory = storage.path(run_dir) / CHECKPOINTS
        self.manager = ocp.CheckpointManager(self.directory, options=options)
        self._meta = {"stage": stage, "model": model.to_hf_dict(), "param_dtype": model.numerics.param_dtype}

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def set_lora(self, lora: LoraConfig, base: str, fingerprint: str) -> None:
        """Record in every checkpoint's meta that its parameters are adapters of `base`."""
        self._meta["lora"] = {
            "rank": lora.rank,
            "alpha": lora.alpha,
            "dropout": lora.dropout,
            "targets": list(lora.targets),
            "base": base,
            "base_fingerprint": fingerprint,
        }

    def read_latest_meta(self) -> dict[str, Any]:
        return read_meta(self.directory / str(self.latest_step()))

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
        return _restore(composite_checkpointer(), self.directory / str(step), target, data_iterator)

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()


def export_checkpoint(
    path: str | os.PathLike, out_dir: str | os.PathLike, dtype: str = "bfloat16", quantize: str = "none"
) -> Path:
    """Write a trainer checkpoint (run or step directory) in the release's HF layout (`quantize="int8"`:
    the int8 weight-only layout, see flmjax.model.quant); a LoRA run: its base with the adapters merged in."""
    step_dir = locate_step_dir(path)
    model = FLMAudio.from_pretrained(step_dir, dtype=read_meta(step_dir)["param_dtype"], quantize=quantize)
    model.save_pretrained(out_dir, dtype=dtype)
    return storage.path(out_dir)


def export_adapters(path: str | os.PathLike, out_file: str | os.PathLike) -> Path:
    """Write a LoRA run's adapters alone (fp32 safetensors, with the base's fingerprint; `--lora FILE`)."""
    step_dir = locate_step_dir(path)
    meta = read_meta(step_dir)
    adapters, lora = restore_adapters(step_dir)
    lora_file.save_adapters(
        out_file,
        jax.device_get(adapters),
        lora,
        meta["lora"]["base_fingerprint"],
        meta["model"],
        meta["lora"]["base"],
    )
    return Path(out_file)
