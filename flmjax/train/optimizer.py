"""AdamW with the stage's learning-rate schedule: optional linear warmup, then cosine from peak to end.

The papers give only the cosine's peak and end per stage (Table 3); betas, weight decay, warmup and
clipping are choices kept as `OptimizerConfig` fields. The optimizer sees fp32 master weights (the
parameters' dtype) whatever the compute dtype, so its moments are fp32 as well.

The learning rate is computed on the host and passed to the train step as a number (optax's `adamw` is
`scale_by_adam -> add_decayed_weights -> scale by -lr`; the last factor is applied by the step). So the
compiled step does not depend on the schedule: stages of one model share one compilation, and reading
the rate never waits for the device.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import optax

from flmjax.train.config import OptimizerConfig


@dataclasses.dataclass(frozen=True)
class LearningRateSchedule:
    """lr(step) of the update made at `step` (0-based): `warmup` linear steps up to the peak (the first
    update already has peak / warmup), then a half cosine from peak that reaches `end` at `total`
    and stays there."""

    peak: float
    end: float
    warmup: int
    total: int

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return self.peak * (step + 1) / self.warmup
        progress = min(step - self.warmup, self.decay_steps) / self.decay_steps
        return self.end + (self.peak - self.end) * 0.5 * (1.0 + math.cos(math.pi * progress))

    @property
    def decay_steps(self) -> int:
        return max(self.total - self.warmup, 1)


def learning_rate_schedule(config: OptimizerConfig, total_steps: int) -> LearningRateSchedule:
    return LearningRateSchedule(config.peak_lr, config.end_lr, config.warmup_steps(total_steps), total_steps)


def _decay_mask(params):
    """Weight decay on matrices and embedding tables only, not on norm weights or biases (the usual choice)."""
    return jax.tree_util.tree_map(lambda p: p.ndim >= 2, params)


def make_optimizer(config: OptimizerConfig) -> optax.GradientTransformation:
    """Global-norm clipping (when `clip_norm` > 0), then AdamW's update direction; the step scales it by -lr."""
    direction = [
        optax.scale_by_adam(b1=config.b1, b2=config.b2, eps=config.eps),
        optax.add_decayed_weights(config.weight_decay, mask=_decay_mask),
    ]
    if config.clip_norm > 0:
        direction.insert(0, optax.clip_by_global_norm(config.clip_norm))
    return optax.chain(*direction)


def apply_learning_rate(updates, learning_rate):
    """AdamW's last factor: -lr (the rate is a traced scalar, so one compiled step serves any schedule)."""
    return jax.tree_util.tree_map(lambda u: (-learning_rate * u).astype(u.dtype), updates)
