"""launch/aot.py compiles the train step ahead of time from abstract inputs (the tiny model here, so the
script cannot rot): memory per device follows the mesh (FSDP halves the state per device)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_aot_compiles_the_tiny_step_and_fsdp_splits_the_state():
    args = ["--model", "tiny", "--devices", "2", "--seq", "32", "--batch", "4", "--micro", "1", "--remat", "full",
            "--chunk", "16", "--dtype", "float32", "--mesh", "2,1,1", "1,2,1", "--json"]  # fmt: skip
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2")
    proc = subprocess.run([sys.executable, str(REPO / "launch" / "aot.py"), *args], env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    data, fsdp = (json.loads(line) for line in proc.stdout.strip().splitlines())
    assert (data["mesh"], fsdp["mesh"]) == ("2x1x1", "1x2x1")
    assert data["rows_per_device"] == fsdp["rows_per_device"] == 2
    # The arguments are the fp32 state (parameters + two AdamW moments) and the batch: replicated under
    # a data mesh, split in two under FSDP (small norm/bias vectors aside).
    assert fsdp["arguments_gb"] == pytest.approx(data["arguments_gb"] / 2, rel=0.05)
    assert 0 < data["temp_gb"] and data["fits"] and fsdp["fits"]
    assert data["xla_flops_per_step"] == fsdp["xla_flops_per_step"] > 0
    assert data["model_flops_per_step"] > 0
