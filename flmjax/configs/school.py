"""The school: the `school` model (3 layers of 128, the curriculum's 1024-id word vocabulary) learns the
synthetic curriculum (flmjax/data/curriculum.py) from scratch on a CPU: post-training on its sentences, then
the semi-duplex and the full-duplex dialog stages and DPO (post1 -> ft1 -> ft2 -> dpo). Paths are under
runs/school in the current directory; `launch/bench_learning.py --out DIR` writes the curriculum and the
fitted Mimi there first and moves the paths (`config(root)`).

Size and steps: batch 4 of 256 frames (20.5 s, a dialog of 2-3 questions; one compiled shape), 60 + 80 + 120
steps, then BayLing-Duplex's DPO stage (configs/dpo.py) on ft2's dialogs as preference pairs: 60 steps, beta
0.5, lambda_ftx 0.5, cosine from 1e-4 (BayLing's 3e-7 is 1/27 of FLM-Audio's ft2 peak; this is 1/20 of the
school's, so that 60 steps move a model trained at 2e-3 at all). A step is 9.1 GFLOP: ~1 s on this 2-core
machine when it is quiet, 20-30 s at the load average of ~30 it had while the benchmark was sized, which is
what fixed the steps (README, "Learning to take turns"). ft1 reads per-turn codes; ft2 reads them too (no
augmentation: the held-out users are clean espeak-ng) with the layout's own interruptions (probability 0.7,
0.5 s reaction).
"""

import dataclasses
from pathlib import Path

from flmjax.config import Numerics
from flmjax.configs import dpo, ft1, ft2, post1
from flmjax.data.config import POST_TRAINING, CorpusSpec, DataConfig
from flmjax.data.layouts import LayoutConfig
from flmjax.data.layouts.preference import PreferenceConfig
from flmjax.train.config import CheckpointConfig, ExportConfig, LogConfig, MeshConfig, OptimizerConfig, TrainConfig

ROOT = Path("runs") / "school"  # relative to the current directory, like the other configs' runs/
SAMPLE_FRAMES = 256
BATCH = 4
STEPS = {"post1": 60, "ft1": 80, "ft2": 120, "dpo": 60}


def _data(root: Path, name: str, layout: str, manifest: str) -> DataConfig:
    return DataConfig(
        name, layout, (CorpusSpec(name, manifest=str(root / "corpus" / manifest)),), global_batch=BATCH,
        layout_config=LayoutConfig(sample_frames=SAMPLE_FRAMES, pad_dialogs=layout != POST_TRAINING),
        mimi=str(root / "mimi.safetensors"), tokenizer="words", cache_dir=str(root / "cache"),
    )  # fmt: skip


def _stage(c: TrainConfig, root: Path, data: DataConfig, peak_lr: float, end_lr: float, **changes) -> TrainConfig:
    steps = STEPS[c.stage]
    return dataclasses.replace(
        c,
        model="school",
        numerics=Numerics(dtype="float32", remat="none"),
        mesh=MeshConfig(data=-1, fsdp=1, tensor=1),
        micro_batches=1,
        run_root=str(root),
        data=data,
        steps=steps,
        optimizer=OptimizerConfig(peak_lr=peak_lr, end_lr=end_lr, warmup_fraction=0.05),
        checkpoint=CheckpointConfig(every_steps=20, keep=1),
        log=LogConfig(every_steps=20, eval_every_steps=0, eval_batches=0, tensorboard=False),
        **changes,
    )


def _pairs(root: Path) -> DataConfig:
    """ft2's dialogs as preference pairs (turn-taking and interruption 1:1; every dialog interruptible)."""
    data = _data(root, "school_dpo", "response_tts_free", "dialogs_ft2.jsonl")
    layout = dataclasses.replace(data.layout_config, interruption_prob=1.0)
    return data.replace(layout_config=layout, preference=PreferenceConfig())


def config(root: Path = ROOT) -> tuple[TrainConfig, ...]:
    first = post1.config()
    return (
        _stage(first, root, _data(root, "school_speech", POST_TRAINING, "speech.jsonl"), 3e-3, 1e-3,
               init=dataclasses.replace(first.init, random_ok=True)),
        _stage(ft1.config(), root, _data(root, "school_ft1", "asr_response_tts", "dialogs_ft1.jsonl"), 2e-3, 1e-3),
        _stage(ft2.config(), root, _data(root, "school_ft2", "response_tts_free", "dialogs_ft2.jsonl"), 2e-3, 5e-4),
        _stage(dpo.config(), root, _pairs(root), 1e-4, 0.0,
               export=ExportConfig(dir=str(root / "export"), dtype="float32")),
    )  # fmt: skip
