"""Fine-tuning 1 (papers' Table 3): semi-duplex ASR-Response-TTS dialogs, 2 epochs, batch 256,
cosine 1e-5 -> 8e-6. Starts from post2: `--init.params_from=RUN_DIR`."""

from flmjax.data.config import get_data_config

BASE = "base"
OVERRIDES = {
    "stage": "ft1",
    "data": get_data_config("ft1"),
    "epochs": 2.0,
    "optimizer.peak_lr": 1e-5,
    "optimizer.end_lr": 8e-6,
}
