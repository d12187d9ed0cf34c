"""flmjax: FLM-Audio in JAX/Flax."""
