"""DPO after ft2 (BayLing-Duplex Stage II): preference pairs of ft2's dialogs (turn-taking and
interruption negatives that differ only in the model's timing, 1:1); L = DPO (beta 0.5) + 0.5 x SFT on
the chosen side; 200 steps, cosine from 3e-7 (to 0) with 5% warmup. Starts from ft2, which is also the
frozen reference pi_ref: `--init.params_from=runs/ft2`."""

import dataclasses

from flmjax.configs import base
from flmjax.data.config import get_data_config
from flmjax.train.config import DPOConfig, TrainConfig


def config() -> TrainConfig:
    c = base.config()
    optimizer = dataclasses.replace(c.optimizer, peak_lr=3e-7, end_lr=0.0, warmup_fraction=0.05)
    return dataclasses.replace(
        c, stage="dpo", data=get_data_config("dpo"), dpo=DPOConfig(beta=0.5, lambda_ftx=0.5), steps=200,
        optimizer=optimizer,
    )  # fmt: skip
