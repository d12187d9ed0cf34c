"""Fine-tuning 2 (papers' Table 3): Response-TTS with free user inputs and speech leakage, 6 epochs,
batch 256, cosine 8e-6 -> 7e-6. Starts from ft1: `--init.params_from=RUN_DIR`."""

from flmjax.data.config import get_data_config

BASE = "base"
OVERRIDES = {
    "stage": "ft2",
    "data": get_data_config("ft2"),
    "epochs": 6.0,
    "optimizer.peak_lr": 8e-6,
    "optimizer.end_lr": 7e-6,
}
