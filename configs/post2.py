"""Post-training 2 (papers' Table 3): the automatic corpus down-sampled x0.5 plus human-annotated ASR
sets up-sampled x5, 1 epoch, batch 256, cosine 1e-5 -> 8e-6. Starts from post1: `--init.params_from=RUN_DIR`."""

from flmjax.data.config import get_data_config

BASE = "base"
OVERRIDES = {
    "stage": "post2",
    "data": get_data_config("post2"),
    "epochs": 1.0,
    "optimizer.peak_lr": 1e-5,
    "optimizer.end_lr": 8e-6,
}
