"""Fine-tuning a released (or exported) FLM-Audio on one's own conversations: LoRA on one accelerator.

    flmjax-train --config=finetune --init.params_from=/ckpt/FLM-Audio --corpus=moshi:/data/train.jsonl

The architecture is the base's (`model="base"`: init.params_from's config.json); `--corpus` replaces the
corpora with one (a prepared folder, a manifest, `moshi:FILE.jsonl`, `tfds:NAME`, `hf:PATH`), or mix
several with `--data.corpora name=A,prepared=DIR,weight=W ...`. Where FLM-Audio's papers are silent the
defaults are moshi-finetune's (example/moshi_7B.yaml): LoRA rank 128 with scale 2, 100 s windows (1250
frames), batch 16, AdamW weight decay 0.1, 5% warmup, 2000 steps, a checkpoint (and, with eval_data, an
evaluation) every 100 steps. moshi-finetune's learning rate is 2e-6 for full fine-tuning; LoRA adapters
start at zero and take a higher one: 1e-4 peak, cosine to 1e-5 (see README, "Fine-tuning").
"""

import dataclasses

from flmjax.config import LoraConfig, Numerics
from flmjax.configs import base
from flmjax.data.config import DEMO_DIR, CorpusSpec, DataConfig
from flmjax.data.layouts import LayoutConfig
from flmjax.train.config import CheckpointConfig, InitConfig, LogConfig, MeshConfig, OptimizerConfig, TrainConfig

START_HINT = "--init.params_from=DIR: the base to adapt (the release's HF directory or an export)"
WINDOW_FRAMES = 1250  # 100 s at 12.5 Hz, moshi-finetune's duration_sec


def config() -> TrainConfig:
    data = DataConfig(
        "finetune",
        "response_tts_free",  # for dialog manifests mixed in; recorded conversations keep their own timing
        (CorpusSpec("demo_dialogs", manifest=str(DEMO_DIR / "dialogs.jsonl")),),  # stops at once: give --corpus
        global_batch=16,
        layout_config=LayoutConfig(sample_frames=WINDOW_FRAMES, pad_dialogs=True),
    )
    return dataclasses.replace(
        base.config(),
        stage="finetune",
        model="base",
        # The frozen base in bf16 (no fp32 copy, no optimizer state); the adapters fp32 with their moments.
        numerics=Numerics(dtype="bfloat16", param_dtype="float32", remat="full"),
        lora=LoraConfig(rank=128),
        data=data,
        steps=2000,
        optimizer=OptimizerConfig(peak_lr=1e-4, end_lr=1e-5, warmup_fraction=0.05),
        mesh=MeshConfig(data=1, fsdp=-1, tensor=1),  # one device, or the base split over several
        micro_batches=-1,
        init=InitConfig(
            start_hint="--init.params_from=DIR: the base to adapt (the release's HF directory or an export)"
        ),
        checkpoint=CheckpointConfig(every_steps=100, keep=3),
        log=LogConfig(every_steps=1, eval_every_steps=100, eval_batches=8),
    )
