"""Post-training 2 (papers' Table 3): the automatic corpus down-sampled x0.5 plus human-annotated ASR
sets up-sampled x5, 1 epoch, batch 256, cosine 1e-5 -> 8e-6. Starts from post1: `--init.params_from=RUN_DIR`."""

from flmjax.configs import base
from flmjax.train.config import TrainConfig


def config() -> TrainConfig:
    return base.paper_stage("post2", 1.0, 1e-5, 8e-6)
