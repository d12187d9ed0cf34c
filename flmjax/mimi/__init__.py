"""kyutai's Mimi audio codec in JAX/Flax: 24 kHz mono <-> 8 codes per 80 ms frame, batch and streaming."""

from flmjax.mimi.codec import Mimi
from flmjax.mimi.config import MimiConfig
from flmjax.mimi.streaming import MimiStream
from flmjax.mimi.weights import MimiWeightsError

__all__ = ["MimiWeightsError", "Mimi", "MimiConfig", "MimiStream"]
