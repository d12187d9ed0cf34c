"""One host of a multi-host preparation, as its own process: the prepare_data CLI with a tiny random Mimi
(`python -m tests.prepare_host ARGS...`; the codec is the only stand-in, the preparation is the real one)."""

import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")


def tiny_mimi():
    from flmjax.mimi import Mimi
    from flmjax.mimi.config import MimiConfig

    config = MimiConfig(dimension=32, n_filters=4, num_heads=2, num_layers=1, dim_feedforward=64, codebook_dim=8)
    return Mimi.random(seed=0, config=config)


def main(argv: list[str]) -> int:
    from unittest import mock

    from flmjax.data import prepare
    from tests.test_pipeline import _load_launch

    mimi = tiny_mimi()
    with mock.patch.object(prepare, "LazyMimi", lambda name, log: mimi):  # the tiny codec, not a loaded one
        return _load_launch("prepare_data").main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
