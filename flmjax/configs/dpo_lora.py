"""`dpo` with LoRA adapters on the frozen ft2 (BayLing-Duplex Table 4's LoRA ablation is a sweep of this
config: `--config=dpo_lora --lora.rank=8|32|128 --init.params_from=runs/ft2`). pi_ref is the frozen base
with zero adapters, so no second copy of the parameters is held; export merges the adapters."""

import dataclasses

from flmjax.config import LoraConfig
from flmjax.configs import dpo
from flmjax.train.config import TrainConfig


def config() -> TrainConfig:
    return dataclasses.replace(dpo.config(), lora=LoraConfig(rank=32))
