"""The demo: a small model (`demo`: the real text vocabulary, 4 layers of 128) through all four stages
on the demo corpus (data/demo/) on a CPU in a few minutes, then an export in the release's layout.

Each stage keeps its layout and Table 3's schedule shape (cosine peak -> end), with short samples, a
batch of 4, a fixed number of steps and rates a small randomly initialised model learns with.
"""

import dataclasses

from flmjax.data.config import DEMO_DIR, CorpusSpec, get_data_config


def _data(stage: str):
    data = get_data_config(stage)
    return data.replace(global_batch=4, layout_config=dataclasses.replace(data.layout_config, sample_frames=96))


# post1 trains on the automatic corpus only, so the human-annotated one is a held-out split for it.
_HELD_OUT = _data("post1").replace(
    name="post1_eval", corpora=(CorpusSpec("demo_speech_human", str(DEMO_DIR / "speech_human.jsonl")),)
)

CHAIN = ("post1", "post2", "ft1", "ft2")
OVERRIDES = {
    "model.name": "demo",
    "model.dtype": "float32",  # CPUs compute bf16 slowly
    "model.remat": "none",
    "model.attention_chunk": 0,
    "mesh.data": -1,
    "mesh.fsdp": 1,
    "mesh.tensor": 1,
    "micro_batches": 1,
    "run_root": "runs/demo",
    "checkpoint.every_steps": 15,
    "checkpoint.keep": 2,
    "log.every_steps": 1,
    "log.eval_every_steps": 0,  # one evaluation at the end of each stage
    "log.eval_batches": 2,
}
STAGE_OVERRIDES = {
    "post1": {
        "data": _data("post1"),
        "eval_data": _HELD_OUT,
        "init.random_ok": True,
        "steps": 30,
        "optimizer.peak_lr": 3e-3,
        "optimizer.end_lr": 3e-4,
    },
    "post2": {"data": _data("post2"), "steps": 10, "optimizer.peak_lr": 1e-3, "optimizer.end_lr": 8e-4},
    "ft1": {"data": _data("ft1"), "steps": 10, "optimizer.peak_lr": 1e-3, "optimizer.end_lr": 8e-4},
    "ft2": {
        "data": _data("ft2"),
        "steps": 10,
        "optimizer.peak_lr": 1e-3,
        "optimizer.end_lr": 8e-4,
        "export.dir": "runs/demo/export",
    },
}
