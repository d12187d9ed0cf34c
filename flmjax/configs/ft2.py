"""Fine-tuning 2 (papers' Table 3): Response-TTS with free user inputs and speech leakage, 6 epochs,
batch 256, cosine 8e-6 -> 7e-6. Starts from ft1: `--init.params_from=RUN_DIR`."""

from flmjax.configs import base
from flmjax.train.config import TrainConfig


def config() -> TrainConfig:
    return base.paper_stage("ft2", 6.0, 8e-6, 7e-6)
