"""flmjax: FLM-Audio (native full-duplex spoken dialog) in JAX/Flax."""

from flmjax.model.pretrained import FLMAudio

__all__ = ["FLMAudio"]
