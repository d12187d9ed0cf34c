"""Reading the checkpoints flmjax's trainer writes (Orbax; the writer is `flmjax.train.checkpoint`).

A run directory holds `checkpoints/<step>/` with four items:
  params     fp32 parameters (StandardSave; restored into any mesh's shardings)
  opt_state  optimizer moments and counters
  data       the Grain iterator state, one JSON file per host (grain's Orbax handler)
  meta       JSON: step, stage, param_dtype and the model's `config.json` (so a checkpoint describes its model)
Step N holds the state after N optimizer updates. This module reads the step directories, their meta and
their parameters; it knows nothing of the model's code, so that the model can load these checkpoints.
A run directory may be in a bucket (gs://...: `flmjax.storage`); Orbax reads and writes it there itself.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from flmjax import storage
from flmjax.config import ModelConfig, Numerics
from flmjax.errors import FlmjaxError

CHECKPOINTS = "checkpoints"
# On gs:// Orbax writes a step in its final place and writes this file last (there is no atomic rename).
COMMIT_MARKER = "commit_success.txt"


class CheckpointError(FlmjaxError):
    """A path that holds no usable flmjax checkpoint, or one that does not fit the model."""


def _step_dirs(root: Path) -> list[Path]:
    return sorted((p for p in root.iterdir() if p.name.isdigit() and p.is_dir()), key=lambda p: int(p.name))


def _is_step_dir(path: Path) -> bool:
    if not ((path / "meta").is_dir() and (path / "params").is_dir()):
        return False
    return not str(path).startswith("gs://") or (path / COMMIT_MARKER).exists()  # a step still being written


def locate_step_dir(path: str | os.PathLike) -> Path:
    """The step directory a path names: a step directory itself, or the newest step of a run directory
    (`<run>/checkpoints/<step>`) or of a checkpoints directory. Absolute, as Orbax requires (a gs:// path
    is; it comes back an `etils.epath.Path`, which Orbax takes)."""
    path = storage.path(path) if storage.is_remote(path) else Path(path).resolve()
    if _is_step_dir(path):
        return path
    root = path / CHECKPOINTS if (path / CHECKPOINTS).is_dir() else path
    steps = _step_dirs(root) if root.is_dir() else []
    complete = [s for s in steps if _is_step_dir(s)]
    if not complete:
        raise CheckpointError(f"{path}: no flmjax checkpoint (expected a run directory or a step directory)")
    return complete[-1]


def is_trainer_checkpoint(path: str | os.PathLike) -> bool:
    try:
        locate_step_dir(path)
    except CheckpointError:
        return False
    return True


def composite_checkpointer() -> ocp.Checkpointer:
    return ocp.Checkpointer(ocp.CompositeCheckpointHandler())


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    step_dir = locate_step_dir(path)
    return composite_checkpointer().restore(step_dir, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]


def model_config_of(path: str | os.PathLike, numerics: Numerics = Numerics()) -> ModelConfig:
    """The architecture a checkpoint was trained with, computing with `numerics`."""
    return ModelConfig.from_hf_dict(read_meta(path)["model"], numerics)


def restore_params(path: str | os.PathLike, target: Any) -> Any:
    """Parameters only, into `target` (ShapeDtypeStructs with shardings: any mesh)."""
    step_dir = locate_step_dir(path)
    args = ocp.args.Composite(params=ocp.args.StandardRestore(target))
    return composite_checkpointer().restore(step_dir, args=args)["params"]


def params_for_inference(path: str | os.PathLike, config: ModelConfig, abstract: Any) -> Any:
    """A trainer checkpoint's parameters on this host's first device, cast to `config.numerics.param_dtype`;
    `abstract` is the parameter tree's shapes (the model's `abstract_params(config)`)."""
    saved_dtype = np.dtype(read_meta(path)["param_dtype"])
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, saved_dtype, sharding=device), abstract)
    return jax.tree_util.tree_map(lambda p: p.astype(config.numerics.param_dtype), restore_params(path, target))
