"""The school chain at a reduced size (`launch/bench_learning.py --size small`): the curriculum, the fitted
codec, post1 -> ft1 -> ft2 and held-out conversations scored with `evaluate.py conversation`; the trained
model takes turns where the untrained one does not."""

import json
import shutil

import pytest

from flmjax.cli import bench_learning

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")


def test_small_chain_learns_to_take_turns(tmp_path, capsys):
    assert bench_learning.main(["--out", str(tmp_path), "--size", "small"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    line = json.loads(out[-1])
    assert set(line) >= {"turn_taking", "false_starts", "barge_in", "answer_accuracy"}
    results = json.loads((tmp_path / "results.json").read_text())
    untrained, trained = results["stages"]["untrained"], results["stages"]["ft2"]
    assert line["turn_taking"]["success_rate"] == trained["turn_taking"]["success_rate"]
    assert trained["turn_taking"]["turns"] == untrained["turn_taking"]["turns"] >= 4
    # The clear margin: at least a third of the held-out turns more answered within 1.5 s.
    assert trained["turn_taking"]["success_rate"] >= untrained["turn_taking"]["success_rate"] + 1 / 3, results
    assert (tmp_path / "export" / "config.json").exists() and (tmp_path / "mimi.safetensors").exists()
    assert any(row.startswith("| model |") for row in out)
