"""Shared by every stage of the real model (flm7b): numerics, mesh, checkpoint and log cadence.

The papers' Table 3 values live in the stage files (post1, post2, ft1, ft2); the optimizer's documented
choices (AdamW betas (0.9, 0.95), weight decay 0.1, clipping 1.0, 1% warmup) are the defaults of
`flmjax.train.config.OptimizerConfig`. The mesh and micro-batching fit 80 GB devices at 8192 frames
per sample: launch/aot.py estimates 62 GB per device for 8 devices as fsdp 4 x tensor 2 with one sequence
per fsdp group per micro-batch, where pure FSDP over 8 (89 GB) does not fit (the text head's logits, 5 GB
per sequence in fp32 over 151668 ids, are the largest activations; tensor parallelism splits them).
"""

OVERRIDES = {
    "model.name": "flm7b",
    "model.dtype": "bfloat16",  # compute
    "model.param_dtype": "float32",  # master weights and AdamW moments
    "model.remat": "full",
    "model.attention_chunk": 0,  # with full remat the peak is elsewhere: chunks of 512/1024 change nothing
    "mesh.data": 1,
    "mesh.fsdp": -1,  # parameters, gradients and moments split over every device ...
    "mesh.tensor": 2,  # ... and heads, MLP and vocabulary over pairs of them
    "micro_batches": -1,  # one sequence per fsdp group per micro-batch
    "checkpoint.every_steps": 500,
    "checkpoint.keep": 3,
    "log.every_steps": 10,
    "log.eval_every_steps": 500,
    "log.eval_batches": 8,
}
