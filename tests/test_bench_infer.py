"""launch/bench_infer.py keeps working: the smallest comparison against the PyTorch loop runs (no timings
are asserted), and without torch the comparison stops with one line naming the install command."""

import sys

import pytest

from tests.infer_helpers import load_launcher


@pytest.mark.reference
def test_bench_infer_smallest_comparison(capsys):
    bench = load_launcher("bench_infer")
    assert bench.main(["--config", "tiny", "--frames", "2", "--batches", "1"]) == 0
    out = capsys.readouterr().out
    assert "checkpoint: random 'tiny' (fp32), 2 frames per run" in out
    assert "target: flmjax <= 0.25 x PyTorch per frame (median); worst ratio" in out


def test_bench_infer_without_torch_says_how_to_install_it(monkeypatch, capsys):
    bench = load_launcher("bench_infer")  # imported first: scipy, loaded with it, looks torch up in sys.modules
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    assert bench.main(["--frames", "2", "--batches", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: bench_infer (all but --growth) runs the PyTorch reference, and torch is not installed: "
                   "pip install torch==2.13.0"]  # fmt: skip
