"""Kill and resume: `launch/train.py` runs as a real process on a prepared corpus read by the real Grain
pipeline; one run is stopped by SIGTERM (it saves and exits 143), restarted, killed by SIGKILL (no
chance to save), restarted again and finished. Its loss curve equals an uninterrupted run's step for
step (same data order after each restore) and so do its final parameters."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from flmjax import FLMAudio
from flmjax.config import get_model_config
from tests.synthetic_data import write_speech_corpus

REPO = Path(__file__).resolve().parents[1]
STEPS = 30
EVERY = 4  # checkpoint cadence

CONFIG = """
from flmjax.config import Numerics
from flmjax.data.config import POST_TRAINING, CorpusSpec, DataConfig
from flmjax.data.layouts import LayoutConfig
from flmjax.train.config import CheckpointConfig, InitConfig, LogConfig, OptimizerConfig, TrainConfig


def config():
    return TrainConfig(
        stage="resume_test", model="tiny", numerics=Numerics(),
        data=DataConfig("pairs", POST_TRAINING, (CorpusSpec("pairs", prepared={corpus!r}),), global_batch=8,
                        layout_config=LayoutConfig(sample_frames=96)),
        steps={steps}, optimizer=OptimizerConfig(peak_lr=1e-3, end_lr=1e-4),
        checkpoint=CheckpointConfig(every_steps={every}, keep=3),
        log=LogConfig(every_steps=1, progress=False, tensorboard=False, eval_batches=0),
        init=InitConfig(random_ok=True), run_root={root!r},
    )
"""


def _launch(config: Path, run_dir: Path) -> subprocess.Popen:
    # The runs inherit the suite's XLA flags (tests/conftest.py): the same for every run, so they compare.
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.Popen(
        [sys.executable, str(REPO / "launch" / "train.py"), f"--config={config}", f"--run_dir={run_dir}"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def _curve(run_dir: Path) -> dict[int, list[float]]:
    """Every loss logged for each step (a step redone after a kill appears twice)."""
    curve: dict[int, list[float]] = {}
    path = run_dir / "metrics.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            row = json.loads(line)
            curve.setdefault(row["step"], []).append(row["loss"])
    return curve


def _signal_after(proc: subprocess.Popen, run_dir: Path, step: int, sig: int) -> int:
    """Send `sig` once the run has logged `step`; returns the process's exit status."""
    deadline = time.time() + 240
    while max(_curve(run_dir), default=0) < step:
        assert proc.poll() is None, proc.communicate()[0]  # it exited: its output says why
        assert time.time() < deadline, "the run made no progress"
        time.sleep(0.05)
    proc.send_signal(sig)
    return proc.wait(timeout=120)


def _saved_steps(run_dir: Path) -> list[int]:
    return sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit())


@pytest.mark.slow
def test_killed_runs_resume_on_the_uninterrupted_curve(tmp_path):
    corpus = write_speech_corpus(tmp_path / "corpus", 64, text_vocab=get_model_config("tiny").tokens.text_wait)
    config = tmp_path / "resume.py"
    config.write_text(CONFIG.format(corpus=str(corpus), steps=STEPS, every=EVERY, root=str(tmp_path / "runs")))

    straight = tmp_path / "runs" / "straight"
    done = _launch(config, straight)
    assert done.wait(timeout=300) == 0, done.stdout.read()

    resumed = tmp_path / "runs" / "resumed"
    status = _signal_after(_launch(config, resumed), resumed, 3, signal.SIGTERM)
    assert status == 128 + signal.SIGTERM
    stopped = max(_curve(resumed))
    assert stopped < STEPS and stopped in _saved_steps(resumed)  # saved where it stopped, off the cadence or not

    status = _signal_after(_launch(config, resumed), resumed, stopped + EVERY + 2, signal.SIGKILL)
    assert status == -signal.SIGKILL
    killed_at = max(_curve(resumed))
    finish = _launch(config, resumed)
    assert finish.wait(timeout=300) == 0, finish.stdout.read()

    want, got = _curve(straight), _curve(resumed)
    assert sorted(want) == sorted(got) == list(range(1, STEPS + 1))
    redone = [s for s, losses in got.items() if len(losses) > 1]
    assert redone and max(redone) <= killed_at  # steps after the last checkpoint ran twice ...
    for step, losses in got.items():
        np.testing.assert_array_equal(losses, [want[step][0]] * len(losses), err_msg=f"step {step}")  # ... identically

    a, b = FLMAudio.from_pretrained(straight), FLMAudio.from_pretrained(resumed)
    for x, y in zip(jax.tree_util.tree_leaves(a.params), jax.tree_util.tree_leaves(b.params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
