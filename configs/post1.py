"""Post-training 1 (papers' Table 3): TTS + ASR pairs of the whole automatically transcribed corpus,
3.3 epochs, batch 256, cosine 2e-4 -> 1e-5. Starts from the Qwen2.5-VL language model:
`--init.qwen_from=DIR` (HF safetensors)."""

from flmjax.data.config import get_data_config

BASE = "base"
OVERRIDES = {
    "stage": "post1",
    "data": get_data_config("post1"),
    "epochs": 3.3,
    "optimizer.peak_lr": 2e-4,
    "optimizer.end_lr": 1e-5,
}
