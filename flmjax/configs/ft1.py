"""Fine-tuning 1 (papers' Table 3): semi-duplex ASR-Response-TTS dialogs, 2 epochs, batch 256,
cosine 1e-5 -> 8e-6. Starts from post2: `--init.params_from=RUN_DIR`."""

from flmjax.configs import base
from flmjax.train.config import TrainConfig


def config() -> TrainConfig:
    return base.paper_stage("ft1", 2.0, 1e-5, 8e-6)
