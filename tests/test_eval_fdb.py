"""Full-Duplex-Bench metrics: the benchmark's three example samples (its reported numbers) and folders
built to hit every branch of its rules, with the outcomes worked out by hand. The same folders gave
identical numbers from the benchmark's own scripts (the parity table in the issue-9 note)."""

import json

import numpy as np
import pytest

from flmjax.cli.evaluate import main
from flmjax.eval import fdb
from tests import eval_helpers as H


@pytest.mark.parametrize(
    "task, folder, take_turn, latency",
    [
        ("pause_handling", "pause_handling_example", 1.0, None),
        ("smooth_turn_taking", "smooth_turn_taking_example", 1.0, 1.35),  # 3.36 - 2.01
        ("user_interruption", "user_interruption_example", 1.0, 4.08),  # 17.224 - 13.144
    ],
)
def test_benchmark_examples(task, folder, take_turn, latency):
    out = fdb.evaluate(H.SHARED / folder, task)
    assert out["samples"] == 1 and out["take_turn"] == take_turn
    assert out["latency"] == (None if latency is None else pytest.approx(latency, abs=1e-9))
    if task == "user_interruption":
        assert out["rating"] == 4  # the example's rating.json


def test_every_branch_of_the_turn_rules(tmp_path):
    dirs = H.turn_task_dirs(tmp_path)
    expected = {name: outcome for name, (_, outcome) in H.TURN_CASES.items()}
    for task in ("smooth_turn_taking", "user_interruption"):
        out = fdb.evaluate(dirs[task], task)
        got = {r["sample"]: (r["take_turn"], r["latency"]) for r in out["per_sample"]}
        assert {n: t for n, (t, _) in got.items()} == {n: t for n, (t, _) in expected.items()}
        for name, (_, latency) in expected.items():
            assert got[name][1] == (None if latency is None else pytest.approx(latency, abs=1e-9))
        assert out["take_turn"] == pytest.approx(3 / 5)
        assert out["latency"] == pytest.approx((0.5 + 1.25 + 0.0) / 3)  # over the samples that took the turn
    assert fdb.evaluate(dirs["user_interruption"], "user_interruption")["rating"] == pytest.approx((4 + 2 + 5) / 3)
    pause = fdb.evaluate(dirs["pause_handling"], "pause_handling")
    tors = {**{n: o[0] for n, o in expected.items()}, **{n: t for n, (_, t) in H.PAUSE_EXTRA.items()}}
    assert {r["sample"]: r["take_turn"] for r in pause["per_sample"]} == tors
    assert pause["take_turn"] == pytest.approx(4 / 7) and pause["latency"] is None


def test_no_sample_takes_the_turn_gives_null_latency(tmp_path):
    dirs = H.turn_task_dirs(tmp_path)
    for name in ("3", "4", "5"):
        (dirs["smooth_turn_taking"] / name / "output.json").write_text('{"text": "", "chunks": []}')
    out = fdb.evaluate(dirs["smooth_turn_taking"], "smooth_turn_taking")
    assert out["take_turn"] == 0.0 and out["latency"] is None  # the benchmark's script divides by zero here


def test_backchannel_rules(tmp_path):
    root = H.backchannel_dirs(tmp_path)
    out = fdb.evaluate(root, "backchannel", H.SHARED / fdb.GT_DISTRIBUTION)
    rows = {r["sample"]: r for r in out["per_sample"]}
    assert {n: r["take_turn"] for n, r in rows.items()} == {n: c[2] for n, c in H.BACKCHANNEL_CASES.items()}
    # Candidates: every short segment walked (sample 3 stops at its long one; sample 2's last decides TOR).
    assert {n: len(r["backchannels"]) for n, r in rows.items()} == {"0": 0, "1": 1, "2": 2, "3": 1, "4": 1, "5": 1}
    assert rows["0"]["jsd"] == 1.0 and all(0 < r["jsd"] < 1 for n, r in rows.items() if n != "0")
    for r in rows.values():
        assert r["frequency"] == len(r["backchannels"]) / H.BACKCHANNEL_DURATION_S
        for s, e in r["backchannels"]:
            assert round(s, 1) == s and round(e, 1) == e  # seconds at 0.1 s, as silero's return_seconds
    assert out["take_turn"] == 0.5 and out["frequency"] == pytest.approx(6 / 60)
    assert out["jsd"] == pytest.approx(np.mean([r["jsd"] for r in rows.values()]))


def test_jsd_against_a_hand_computed_histogram():
    # 1 s of output = 6 bins of 0.2 s; a candidate [0.2, 0.5] fills bins 1 and 2; the reference is uniform.
    hist = np.array([0, 1, 1, 0, 0, 0]) + 1e-10
    p, q = hist / hist.sum(), np.full(6, 1 / 6)
    m = (p + q) / 2
    want = np.sqrt((np.sum(p * np.log(p / m)) + np.sum(q * np.log(q / m))) / 2)
    assert fdb.backchannel_jsd([[0.2, 0.5]], 1.0, [1.0, 1.0, 1.0]) == pytest.approx(want)


def test_latency_intervals(tmp_path):
    out = fdb.evaluate(H.timing_dirs(tmp_path), "latency_intervals")
    one, two = out["per_sample"]
    # The user's 0.4 s pause is merged (<= 0.6 s): one response interval from its end to the model's start;
    # the model's short split is merged (<= 0.5 s); the user's "No, wait" overlaps the model: one stop interval.
    assert len(one["latency_resp_list"]) == 1 and len(one["latency_stop_list"]) == 1
    (u_end, m_start), (o_start, o_end) = one["latency_resp_list"][0], one["latency_stop_list"][0]
    assert 2.3 < u_end < m_start and abs(m_start - 3.4) < 0.06 and abs(o_start - 5.2) < 0.06 and o_end > o_start
    assert two == {"sample": "2", "latency_stop_list": [], "latency_resp_list": []}
    assert out["response_latency"] == pytest.approx(m_start - u_end)


def test_cli_json_contract_and_bad_input(tmp_path, capsys):
    root = H.SHARED / "smooth_turn_taking_example"
    assert main(["fdb", "--root", str(root), "--task", "smooth_turn_taking", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"task", "samples", "take_turn", "latency", "per_sample"} <= set(out)
    bad = tmp_path / "bad" / "1"
    bad.mkdir(parents=True)
    (bad / "output.json").write_text("{not json")
    assert main(["fdb", "--root", str(tmp_path / "bad"), "--task", "pause_handling"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "output.json" in err and "\n" not in err
    (bad / "output.json").write_text('{"text": "", "chunks": []}')
    assert main(["fdb", "--root", str(tmp_path / "bad"), "--task", "smooth_turn_taking"]) == 2
    assert "turn_taking.json: file not found" in capsys.readouterr().err
    assert main(["fdb", "--root", str(tmp_path / "bad"), "--task", "backchannel"]) == 2
    assert "--gt-distribution" in capsys.readouterr().err
