"""PyTorch re-statements of the official FLM-Audio code, used by the parity tests and the benchmarks.

`flm_audio_torch.TorchFLMAudio` is the model (the release's state-dict names, transformers' Qwen2 backbone);
`torch_step_loop.TorchStepLoop` is the release's streaming step loop. torch is not a runtime dependency of
flmjax (requirements-test.txt pins it), so these modules import it at the top and only the tests and the
benchmarks import them; a program that needs them calls `require_torch()` first for a one-line error.
"""

from flmjax.errors import FlmjaxError

TORCH_PIN = "torch==2.13.0"  # requirements-test.txt


def require_torch(what: str) -> None:
    """Raise FlmjaxError naming the install command when torch cannot be imported."""
    try:
        import torch  # noqa: F401
    except ImportError as e:
        raise FlmjaxError(
            f"{what} runs the PyTorch reference, and torch is not installed: pip install {TORCH_PIN}"
        ) from e
