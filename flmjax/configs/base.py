"""Shared by every stage of the real model (flm7b): numerics, mesh, checkpoint and log cadence.

The papers' Table 3 values live in the stage modules (post1, post2, ft1, ft2); the optimizer's documented
choices (AdamW betas (0.9, 0.95), weight decay 0.1, clipping 1.0, 1% warmup) are the defaults of
`flmjax.train.config.OptimizerConfig`. The mesh and micro-batching fit 80 GB devices at 8192 frames
per sample: launch/aot.py estimates 62 GB per device for 8 devices as fsdp 4 x tensor 2 with one sequence
per fsdp group per micro-batch, where pure FSDP over 8 (89 GB) does not fit (the text head's logits, 5 GB
per sequence in fp32 over 151668 ids, are the largest activations; tensor parallelism splits them).
"""

import dataclasses
from typing import Any

from flmjax.config import Numerics
from flmjax.data.config import get_data_config
from flmjax.train.config import CheckpointConfig, LogConfig, MeshConfig, TrainConfig


def config() -> TrainConfig:
    return TrainConfig(
        model="flm7b",
        # bf16 compute, fp32 master weights and AdamW moments; with full remat the peak is elsewhere:
        # attention chunks of 512/1024 change nothing.
        numerics=Numerics(dtype="bfloat16", param_dtype="float32", remat="full", attention_chunk=0),
        # Parameters, gradients and moments split over every device; heads, MLP and vocabulary over pairs.
        mesh=MeshConfig(data=1, fsdp=-1, tensor=2),
        micro_batches=-1,  # one sequence per fsdp group per micro-batch
        checkpoint=CheckpointConfig(every_steps=500, keep=3),
        log=LogConfig(every_steps=10, eval_every_steps=500, eval_batches=8),
    )


def paper_stage(stage: str, epochs: float, peak_lr: float, end_lr: float, **changes: Any) -> TrainConfig:
    """One of the papers' stages (Table 3): its data config, epochs and cosine peak -> end on the base."""
    c = config()
    optimizer = dataclasses.replace(c.optimizer, peak_lr=peak_lr, end_lr=end_lr)
    return dataclasses.replace(
        c, stage=stage, data=get_data_config(stage), epochs=epochs, optimizer=optimizer, **changes
    )
