"""Stage configs: named files, dotted overrides from files and the command line, validation in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from flmjax.config import ConfigError
from flmjax.data.config import CorpusSpec, get_data_config
from flmjax.train.config import TrainConfig, apply_overrides, load_config, load_stages

REPO = Path(__file__).resolve().parents[1]


def _train_cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, str(REPO / "launch" / "train.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_stage_files_override_the_base():
    ft2 = load_config("ft2")
    assert ft2.stage == "ft2" and ft2.epochs == 6.0 and ft2.data == get_data_config("ft2")
    assert ft2.model.name == "flm7b" and ft2.model.dtype == "bfloat16" and ft2.model.param_dtype == "float32"
    assert (ft2.optimizer.b1, ft2.optimizer.b2, ft2.optimizer.weight_decay, ft2.optimizer.clip_norm) == (
        0.9,
        0.95,
        0.1,
        1.0,
    )
    assert load_config("post2").epochs == 1.0 and load_config("ft1").epochs == 2.0


def test_overrides_are_typed_and_nested():
    config = apply_overrides(
        TrainConfig(),
        {"optimizer.peak_lr": "1e-5", "steps": "12", "log.tensorboard": "false", "mesh": {"fsdp": 2},
         "data.layout_config.gap_s": "0.5, 1.5", "data.corpora": '({"name": "mine", "prepared": "/data/mine"},)'},
    )  # fmt: skip
    assert config.optimizer.peak_lr == 1e-5 and config.steps == 12 and config.log.tensorboard is False
    assert config.mesh.fsdp == 2 and config.data.layout_config.gap_s == (0.5, 1.5)
    assert config.data.corpora == (CorpusSpec("mine", prepared="/data/mine"),)
    assert config.optimizer.end_lr == TrainConfig().optimizer.end_lr  # untouched fields keep their values


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"optimizer.peek_lr": 1}, "unknown config field 'optimizer.peek_lr'"),
        ({"optimizer.peak_lr": "fast"}, "optimizer.peak_lr must be float, got 'fast'"),
        ({"steps": 1.5}, "steps must be int, got 1.5"),
        ({"steps": True}, "steps must be int, got True"),
        ({"model.remat": "sometimes"}, "model.remat must be one of"),
        ({"micro_batches": 3}, "must be a multiple of micro_batches 3"),
        ({"steps.value": 3}, "config field steps has no sub-fields"),
        ({"data.corpora": '({"nme": "x"},)'}, "unknown config field 'data.corpora\\[0\\].nme'"),
    ],
)
def test_bad_overrides_fail_in_one_line(overrides, message):
    with pytest.raises(ConfigError, match=message) as info:
        apply_overrides(load_config("ft2"), overrides)
    assert "\n" not in str(info.value)


def test_a_chain_starts_each_stage_from_the_previous_run():
    stages = load_stages("demo", {"steps": "3"})
    assert [s.stage for s in stages] == ["post1", "post2", "ft1", "ft2"]
    assert all(s.steps == 3 and s.model.name == "demo" for s in stages)
    assert stages[0].init.random_ok and not stages[0].init.params_from
    for previous, stage in zip(stages, stages[1:]):
        assert stage.init.params_from == previous.resolved_run_dir
        assert stage.data.layout == get_data_config(stage.stage).layout
    assert stages[-1].export.dir


def test_cli_overrides_and_errors(tmp_path):
    shown = _train_cli("--config=ft2", "--optimizer.peak_lr", "3e-6", "--set", "log.every_steps=7", "--print-config")
    assert shown.returncode == 0, shown.stderr
    assert '"peak_lr": 3e-06' in shown.stdout and '"every_steps": 7' in shown.stdout
    bad = _train_cli("--config=ft2", "--optimizer.beta=0.5")
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0
    assert "unknown config field 'optimizer.beta'" in bad.stderr
    unknown = _train_cli("--config=nope")
    assert unknown.returncode == 2 and "unknown config 'nope'" in unknown.stderr


def test_ft2_without_a_start_or_data_says_what_to_provide(tmp_path):
    result = _train_cli("--config=ft2", f"--run_root={tmp_path}", cwd=tmp_path)
    assert result.returncode == 2
    line = result.stderr.strip()
    assert "\n" not in line and "--init.params_from" in line and "--data.corpora" in line
    assert not any(tmp_path.iterdir())  # nothing was created
