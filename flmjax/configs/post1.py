"""Post-training 1 (papers' Table 3): TTS + ASR pairs of the whole automatically transcribed corpus,
3.3 epochs, batch 256, cosine 2e-4 -> 1e-5. Starts from the Qwen2.5-VL language model:
`--init.qwen_from=DIR` (HF safetensors)."""

from flmjax.configs import base
from flmjax.train.config import InitConfig, TrainConfig


def config() -> TrainConfig:
    start = "--init.qwen_from=DIR: Qwen2.5-VL or Qwen2.5 weights in HF safetensors"
    return base.paper_stage("post1", 3.3, 2e-4, 1e-5, init=InitConfig(start_hint=start))
