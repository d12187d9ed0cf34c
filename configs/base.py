"""Shared by every stage of the real model (flm7b): numerics, mesh, checkpoint and log cadence.

The papers' Table 3 values live in the stage files (post1, post2, ft1, ft2); the optimizer's documented
choices (AdamW betas (0.9, 0.95), weight decay 0.1, clipping 1.0, 1% warmup) are the defaults of
`flmjax.train.config.OptimizerConfig`. The mesh and micro-batching fit 8 x 80 GB devices at 8192
frames per sample (measured with launch/aot.py; see the README's table).
"""

OVERRIDES = {
    "model.name": "flm7b",
    "model.dtype": "bfloat16",  # compute
    "model.param_dtype": "float32",  # master weights and AdamW moments
    "model.remat": "full",
    "model.attention_chunk": 1024,
    "mesh.data": 1,
    "mesh.fsdp": -1,  # parameters, gradients and moments split over every device
    "mesh.tensor": 1,
    "micro_batches": 32,
    "checkpoint.every_steps": 500,
    "checkpoint.keep": 3,
    "log.every_steps": 10,
    "log.eval_every_steps": 500,
    "log.eval_batches": 8,
}
