"""What a run reports: model FLOPs per step and MFU, `metrics.jsonl` and TensorBoard.

Only process 0 writes. A logged line of `metrics.jsonl` is one JSON object: `step`, `loss`, every term,
accuracy and token count of `finalize_loss`, `grad_norm`, `lr`, `tokens_per_s` (tokens = backbone
columns, i.e. frames: one per 80 ms, each carrying 17 streams), `step_s`, and `mfu` where the device's
peak is known; the first line has `first_step_s` (compilation included) and `model_flops_per_step`
instead. Evaluations are lines of their own whose keys start with `eval_`.

A run directory in a bucket (gs://...) cannot be appended to: the files are written in a local folder
and uploaded whole (`metrics.jsonl`, TensorBoard's event files) every `SYNC_S` seconds and at the end; a
resumed run first fetches the `metrics.jsonl` it continues.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np

from flmjax import storage
from flmjax.config import ModelConfig

SYNC_S = 30.0  # a bucket's copy of the metrics lags the run by at most this (and whatever a crash loses)

# Dense bf16 peak FLOP/s per device, by a substring of `device_kind` (first match wins).
PEAK_BF16_FLOPS: tuple[tuple[str, float], ...] = (
    ("H200", 989e12),
    ("H100", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("L4", 121e12),
    ("TPU v6", 918e12),
    ("TPU v5 lite", 197e12),
    ("TPU v5e", 197e12),
    ("TPU v5", 459e12),  # v5p
    ("TPU v4", 275e12),
)


def device_peak_flops(device: jax.Device | None = None) -> float | None:
    """The bf16 peak of a device (per chip), or None when unknown (e.g. CPU)."""
    kind = (device or jax.devices()[0]).device_kind
    return next((peak for name, peak in PEAK_BF16_FLOPS if name.lower() in kind.lower()), None)


def model_flops_per_step(config: ModelConfig, batch: int, columns: int) -> float:
    """Training FLOPs of one step on `batch` sequences of `columns` model columns (T): 3x the forward
    pass's matmul FLOPs (backward = 2x forward), rematerialisation not counted (model FLOPs, as for
    MFU). Causal attention counts the average context, (T + 1) / 2 keys per query."""
    e, h, kv, d, f = (
        config.hidden_size,
        config.num_heads,
        config.num_kv_heads,
        config.head_dim,
        config.intermediate_size,
    )
    dep = config.depformer
    k, a = config.num_codebooks, config.audio_vocab_size
    context = (columns + 1) / 2
    layer = 2 * (e * h * d + 2 * e * kv * d + h * d * e + 3 * e * f) + 2 * 2 * h * d * context
    backbone = config.num_layers * layer + 2 * e * config.vocab_size  # + the text head
    dep_context = (k + 1) / 2
    dep_layer = 2 * (4 * dep.dim * dep.dim + 3 * dep.dim * dep.mlp_dim) + 2 * 2 * dep.dim * dep_context
    depformer = 2 * e * k * dep.dim + k * (dep.num_layers * dep_layer + 2 * dep.dim * a)
    return 3.0 * batch * columns * (backbone + depformer)


def _scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(np.asarray(v)) for k, v in metrics.items()}


class MetricsLogger:
    """metrics.jsonl + TensorBoard in the run directory (process 0 only; a bucket: see the module doc)."""

    def __init__(self, run_dir: str, tensorboard: bool):
        self.enabled = jax.process_index() == 0
        self._jsonl = None
        self._tb = None
        self._remote = run_dir if storage.is_remote(run_dir) else None
        if not self.enabled:
            return
        local = tempfile.mkdtemp(prefix="flmjax-metrics-") if self._remote else run_dir
        self._local = local
        os.makedirs(local, exist_ok=True)
        self.path = os.path.join(local, "metrics.jsonl")
        if self._remote:
            try:  # a resumed run appends to the lines of the runs before it
                previous = storage.read_bytes(os.path.join(self._remote, "metrics.jsonl"))
            except FileNotFoundError:
                previous = b""
            Path(self.path).write_bytes(previous)
        self._jsonl = open(self.path, "a")
        self._synced = time.monotonic()
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(os.path.join(local, "tensorboard"))

    def log(self, step: int, metrics: Mapping[str, Any], split: str = "train") -> dict[str, float]:
        """Write one line (keys prefixed `eval_` for split "eval") and the TensorBoard scalars `split/name`."""
        values = _scalars(metrics)
        if self._jsonl is not None:  # open exactly when enabled
            prefix = "" if split == "train" else f"{split}_"
            self._jsonl.write(json.dumps({"step": step, **{prefix + k: v for k, v in values.items()}}) + "\n")
            self._jsonl.flush()
            if self._tb is not None:
                for name, value in values.items():
                    self._tb.add_scalar(f"{split}/{name}", value, step)
            if self._remote and time.monotonic() - self._synced >= SYNC_S:
                self.sync()
        return values

    def sync(self) -> None:
        """Upload the metrics and event files to a bucket's run directory (nothing to do for a local one)."""
        if self._remote is None or self._jsonl is None:
            return
        if self._tb is not None:
            self._tb.flush()
        self._jsonl.flush()
        storage.write_bytes_atomic(os.path.join(self._remote, "metrics.jsonl"), Path(self.path).read_bytes())
        events = Path(self._local) / "tensorboard"
        for f in sorted(events.iterdir()) if events.is_dir() else []:
            storage.write_bytes_atomic(os.path.join(self._remote, "tensorboard", f.name), f.read_bytes())
        self._synced = time.monotonic()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._jsonl is not None:
            self._jsonl.flush()
            self.sync()
            self._jsonl.close()
            self._jsonl = None
        if self._remote and self.enabled:
            shutil.rmtree(self._local, ignore_errors=True)


class Throughput:
    """Tokens/s, seconds per step and MFU over the steps since the last report; the first report gives
    the first step's time alone (`first_step_s`: it includes compiling the step) and the model FLOPs
    of a step."""

    def __init__(self, flops_per_step: float, tokens_per_step: int, peak_flops: float | None, num_devices: int):
        self.flops_per_step = flops_per_step
        self.tokens_per_step = tokens_per_step
        self.peak = peak_flops * num_devices if peak_flops else None
        self._first = True
        self._restart()

    def _restart(self) -> None:
        self._since = time.perf_counter()
        self._steps = 0

    def step(self) -> None:
        self._steps += 1

    def report(self) -> dict[str, float]:
        """Call after the reported steps' results are on the host (so the time covers their execution)."""
        if self._steps == 0:
            return {}
        seconds = (time.perf_counter() - self._since) / self._steps
        self._restart()
        if self._first:
            self._first = False
            return {"first_step_s": seconds, "model_flops_per_step": self.flops_per_step}
        out = {"step_s": seconds, "tokens_per_s": self.tokens_per_step / seconds}
        if self.peak:
            out["mfu"] = self.flops_per_step / seconds / self.peak
        return out
