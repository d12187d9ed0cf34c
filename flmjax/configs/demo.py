"""The demo: a small model (`demo`: the real text vocabulary, 4 layers of 128) through all four stages
on the demo corpus (flmjax/data/demo/) on a CPU in a few minutes, then an export in the release's layout.

Each stage keeps its layout and Table 3's schedule shape (cosine peak -> end), with short samples, a
batch of 4, a fixed number of steps and rates a small randomly initialised model learns with.
"""

import dataclasses

from flmjax.config import Numerics
from flmjax.configs import ft1, ft2, post1, post2
from flmjax.data.config import DEMO_DIR, CorpusSpec, DataConfig
from flmjax.train.config import CheckpointConfig, ExportConfig, LogConfig, MeshConfig, OptimizerConfig, TrainConfig


def _short(data: DataConfig) -> DataConfig:
    # At most 2 augmented variants of each dialog (ft2 has 6): encoding them is most of the demo's time on a
    # CPU, and 10 steps of 4 samples see each of the 4 dialogs 10 times, whatever the variants.
    layout = dataclasses.replace(data.layout_config, sample_frames=96)
    return data.replace(global_batch=4, layout_config=layout, variants=min(data.variants, 2))


def _stage(c: TrainConfig, steps: int, peak_lr: float, end_lr: float, **changes) -> TrainConfig:
    """A stage's own config (data layout, schedule shape) made small."""
    return dataclasses.replace(
        c,
        model="demo",
        numerics=Numerics(dtype="float32", remat="none"),  # CPUs compute bf16 slowly
        mesh=MeshConfig(data=-1, fsdp=1, tensor=1),
        micro_batches=1,
        run_root="runs/demo",
        demo_data_ok=True,
        data=_short(c.data),
        steps=steps,
        optimizer=OptimizerConfig(peak_lr=peak_lr, end_lr=end_lr),
        checkpoint=CheckpointConfig(every_steps=15, keep=2),
        log=LogConfig(every_steps=1, eval_every_steps=0, eval_batches=2),  # one evaluation at each stage's end
        **changes,
    )


def config() -> tuple[TrainConfig, ...]:
    first = post1.config()
    # post1 trains on the automatic corpus only, so the human-annotated one is a held-out split for it.
    held_out = _short(first.data).replace(
        name="post1_eval", corpora=(CorpusSpec("demo_speech_human", str(DEMO_DIR / "speech_human.jsonl")),)
    )
    return (
        _stage(first, 30, 3e-3, 3e-4, eval_data=held_out, init=dataclasses.replace(first.init, random_ok=True)),
        _stage(post2.config(), 10, 1e-3, 8e-4),
        _stage(ft1.config(), 10, 1e-3, 8e-4),
        _stage(ft2.config(), 10, 1e-3, 8e-4, export=ExportConfig(dir="runs/demo/export")),
    )
