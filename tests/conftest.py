"""Test-wide settings: CPU, fp32 matmuls at full precision, no torch.compile in reference packages."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("NO_TORCH_COMPILE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model():
    """A random `tiny` FLMAudio shared by the tests that only read it (initialising compiles, ~10 s)."""
    from flmjax import FLMAudio

    return FLMAudio.init("tiny", seed=0)
