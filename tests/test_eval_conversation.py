"""Scripted conversations: the scoring rules on a hand-built timeline, the script format's errors, and
the whole `conversation` / `fdb-infer` path on the tiny model (batched Session, PNG, metrics.json)."""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile

from flmjax.cli.evaluate import main
from flmjax.eval import EvalError
from flmjax.eval.conversation import mean_metrics
from flmjax.eval.scoring import score
from flmjax.eval.script import RenderedEvent, UserEvent, parse_script, render
from tests.infer_helpers import small_mimi, tiny_model


def _span(index, kind, start, end, answer=()):
    return RenderedEvent(UserEvent(index, kind, start, text=kind, answer=answer), end)


def test_scoring_rules_on_a_hand_built_timeline():
    spans = [
        _span(0, "hesitation", 0.5, 1.5),
        _span(1, "turn", 2.0, 3.0, answer=("five",)),
        _span(2, "barge_in", 6.0, 6.8),
        _span(3, "backchannel", 9.0, 9.3),
        _span(4, "turn", 11.0, 12.0),
    ]
    model = [(1.7, 1.9), (3.4, 7.2), (7.5, 10.0), (14.0, 15.0)]
    pieces = [""] * 200
    pieces[40:44] = ["The", " answer", " is", " five."]  # written at 3.2-3.5 s, after the first turn
    out = score(spans, model, pieces, duration_s=16.0)
    # The model talks in the hesitation's pause (1.7 s): a false start, not held. It replies to the first
    # turn after 0.4 s (success) and to the second after 2.0 s (too late for 1.5 s, within BayLing's 3 s).
    assert out["turn_taking"] == {"success_rate": 0.5, "latency_s": pytest.approx(1.2), "false_starts": 1,
                                  "turns": 2, "successes": 1, "replies": 2}  # fmt: skip
    assert out["hesitation"] == {"hold_rate": 0.0, "count": 1, "held": 0}
    # The barge-in at 6.0 s finds the model talking until 7.2 s: stopped after 1.2 s (> 1 s: a failure);
    # its reply to the barge-in starts at 7.5 s (0.7 s after it ended).
    assert out["barge_in"] == {"success_rate": 0.0, "stop_latency_s": pytest.approx(1.2), "response_latency_s":
                               pytest.approx(0.7), "count": 1, "applicable": 1, "successes": 0}  # fmt: skip
    assert out["backchannel"] == {"continue_rate": 1.0, "count": 1, "applicable": 1, "continued": 1}
    assert out["answers"] == {"accuracy": 1.0, "count": 1, "correct": 1}
    assert out["bayling"] == {"tt_sr_3s": 1.0, "isr_2s": 1.0, "overlap_s": pytest.approx(1.2)}
    # A model talking on from before a turn did not reply to it; one that never speaks fails every rule.
    silent = score(spans, [], [""] * 200, 16.0)
    assert silent["turn_taking"]["success_rate"] == 0.0 and silent["turn_taking"]["latency_s"] is None
    assert silent["barge_in"]["success_rate"] is None and silent["barge_in"]["applicable"] == 0
    assert score(spans, [(0.0, 16.0)], [""] * 200, 16.0)["turn_taking"]["replies"] == 0
    pooled = mean_metrics([{**out, "per_minute": _pm()}, {**silent, "per_minute": _pm()}])
    assert pooled["conversations"] == 2 and pooled["mean"]["turn_taking"]["success_rate"] == 0.25
    assert pooled["pooled"]["turn_taking"] == {"success_rate": 0.25, "turns": 4, "false_starts": 1}
    assert pooled["mean"]["barge_in"]["success_rate"] == 0.0  # the silent conversation has no applicable barge-in


def _pm():
    return {k: {"count": 1.0, "seconds": 1.0} for k in ("pause", "gap", "overlap")}


def _script(path: Path, data) -> Path:
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


def test_script_errors_name_the_file_and_field(tmp_path, monkeypatch):
    cases = [
        ("{", "not valid JSON"),
        ({"user": []}, "duration_s must be a number"),
        ({"duration_s": 5, "user": [{"start": 1, "text": "hi", "kind": "reply"}]}, r"user\[0\].kind 'reply'"),
        ({"duration_s": 5, "user": [{"start": 1}]}, "exactly one of 'text' or 'audio'"),
        ({"duration_s": 5, "user": [{"start": 6, "text": "hi"}]}, "not before duration_s"),
        ({"duration_s": 5, "user": [{"start": 1, "text": "hi", "kind": "barge_in", "answer": "x"}]}, "only checked"),
    ]
    for i, (data, message) in enumerate(cases):
        with pytest.raises(EvalError, match=message) as err:
            parse_script(_script(tmp_path / f"s{i}.json", data))
        assert f"s{i}.json" in str(err.value) and "\n" not in str(err.value)
    # Audio: a missing file, silence, another rate (resampled, said so), too long for the script.
    s = parse_script(_script(tmp_path / "a.json", {"duration_s": 2, "user": [{"start": 0.5, "audio": "clip.wav"}]}))
    with pytest.raises(FileNotFoundError, match="clip.wav"):
        render(s)
    soundfile.write(tmp_path / "clip.wav", np.zeros(800), 16_000)
    with pytest.raises(EvalError, match="silent"):
        render(s)
    soundfile.write(tmp_path / "clip.wav", 0.3 * np.sin(np.arange(16_000) / 5), 16_000)
    notes = []
    track, spans = render(s, notes)
    assert notes == [f"{tmp_path / 'clip.wav'}: resampled from 16000 Hz to 24000 Hz"]
    assert len(track) == 48_000 and spans[0].end == pytest.approx(1.5)
    soundfile.write(tmp_path / "clip.wav", 0.3 * np.sin(np.arange(40_000) / 5), 16_000)
    with pytest.raises(EvalError, match=r"user\[0\] ends at 3.00 s, after duration_s 2.0"):
        render(s)
    # No espeak-ng: one line saying what to install.
    monkeypatch.setattr("shutil.which", lambda name: None)
    t = parse_script(_script(tmp_path / "t.json", {"duration_s": 2, "user": [{"start": 0.1, "text": "hi"}]}))
    with pytest.raises(EvalError, match="espeak-ng not found: text turns need it"):
        render(t)


SCRIPT = {
    "duration_s": 4.0,
    "user": [
        {"start": 0.2, "text": "What is two plus", "kind": "hesitation"},
        {"start": 1.5, "text": "three?", "kind": "turn", "answer": "five"},
        {"start": 3.0, "text": "stop", "kind": "barge_in"},
    ],
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt")
    tiny_model().save_pretrained(path)
    return path


@pytest.fixture
def small_random_mimi(monkeypatch):
    """`--mimi random` gets the small random codec: the same code path at a fraction of the compile time
    (the full-size random Mimi is what the README's demo run uses)."""
    small = small_mimi()
    monkeypatch.setattr("flmjax.mimi.Mimi.random", staticmethod(lambda seed=0: small))


@pytest.mark.slow
def test_conversation_end_to_end_batched(tmp_path, checkpoint, small_random_mimi, capsys):
    """Two scripts stepped together in one Session batch of the tiny model."""
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    _script(scripts / "a.json", SCRIPT)
    _script(scripts / "b.json", {**SCRIPT, "duration_s": 3.0, "user": SCRIPT["user"][:2], "seed": 3})
    out = tmp_path / "out"
    args = ["conversation", "--checkpoint", str(checkpoint), "--mimi", "random", "--scripts", str(scripts),
            "--out", str(out), "--batch", "2", "--window", "64", "--json"]  # fmt: skip
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["conversations"] == 2 and set(summary["per_conversation"]) == {"a", "b"}
    for name, duration in (("a", 4.0), ("b", 3.0)):
        m = json.loads((out / name / "metrics.json").read_text())
        assert m["duration_s"] == duration and m["activity"] == "codes"
        assert {"pause", "gap", "overlap"} == set(m["per_minute"]) and {"user", "model"} == set(m["ipus"])
        assert set(m["turn_taking"]) >= {"success_rate", "latency_s", "false_starts"}
        assert set(m["barge_in"]) >= {"success_rate", "stop_latency_s"}
        assert set(m["bayling"]) == {"tt_sr_3s", "isr_2s", "overlap_s"}
        assert all(set(u) == {"start_s", "end_s", "text"} for u in m["monologue"])
        assert m["answers"]["count"] == 1
        wav, rate = soundfile.read(out / name / "conversation.wav")
        assert rate == 24_000 and wav.shape == (int(duration * 24_000), 2)
        assert (out / name / "timeline.png").stat().st_size > 10_000
        pieces = json.loads((out / name / "monologue.json").read_text())["pieces"]
        assert all(p["time_s"] == pytest.approx(p["frame"] * 0.08) for p in pieces)
    top = json.loads((out / "metrics.json").read_text())
    assert top["mean"]["turn_taking"]["success_rate"] == np.mean(
        [json.loads((out / n / "metrics.json").read_text())["turn_taking"]["success_rate"] for n in "ab"]
    )


def test_conversation_bad_input_exits_2(tmp_path, capsys):
    bad = _script(tmp_path / "bad.json", {"duration_s": 3, "user": [{"start": 0, "audio": "none.wav"}]})
    assert main(["conversation", "--checkpoint", str(tmp_path), "--mimi", "random", "--script", str(bad),
                 "--out", str(tmp_path / "o")]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "none.wav" in err and "\n" not in err


@pytest.mark.slow
def test_fdb_infer_then_fdb(tmp_path, checkpoint, small_random_mimi, capsys):
    """fdb-infer on a copy of the benchmark's smooth turn-taking example, then our fdb metrics on what it
    wrote; a missing Whisper is a one-line error."""
    import shutil

    from tests.eval_helpers import SHARED

    root = tmp_path / "stt"
    shutil.copytree(SHARED / "smooth_turn_taking_example", root)
    for f in ("output.wav", "output.json"):
        (root / "1" / f).unlink()
    args = ["fdb-infer", "--checkpoint", str(checkpoint), "--mimi", "random", "--root", str(root), "--window", "64"]
    assert main(args) == 0
    user, rate = soundfile.read(root / "1" / "input.wav")
    reply, reply_rate = soundfile.read(root / "1" / "output.wav")
    assert (
        reply_rate == rate and reply.shape == user.shape and np.all(reply[: rate * 6 // 100] == 0)
    )  # the first frame is silent (less the resampler's smear)
    words = json.loads((root / "1" / "output.json").read_text())
    assert set(words) == {"text", "chunks"} and words["chunks"]
    assert all(c["timestamp"][0] < c["timestamp"][1] for c in words["chunks"])
    capsys.readouterr()
    assert main(["fdb", "--root", str(root), "--task", "smooth_turn_taking", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["samples"] == 1
    assert main([*args, "--asr", "whisper:/nonexistent"]) == 2
    assert "no Whisper weights there" in capsys.readouterr().err


def test_vad_activity_of_streamed_tracks():
    from flmjax.eval.conversation import Streamed, activity_segments
    from tests.eval_helpers import place, speech

    user = place(4.0, [(0.5, speech("hello there"))], rate=24_000)
    reply = place(4.0, [(2.5, speech("good to see you", "en-gb+f3"))], rate=24_000)
    streamed = Streamed(user, reply, [""] * 50, [None] * 50, np.zeros((50, 8), int))
    (u,), (m,) = activity_segments(streamed, "vad", None, 24_000, 0.08)
    assert abs(u[0] - 0.5) < 0.06 and abs(m[0] - 2.5) < 0.06
    with pytest.raises(EvalError, match="unknown activity"):
        activity_segments(streamed, "energy", None, 24_000, 0.08)


def test_fake_asr_follows_the_audio():
    from flmjax.eval.asr import FakeASR, backend
    from tests.eval_helpers import place, speech

    pcm = place(4.0, [(1.0, speech("hello there"))])
    (chunk,) = FakeASR().transcribe(pcm, 16_000)["chunks"]
    assert abs(chunk["timestamp"][0] - 1.0) < 0.06
    assert backend(None) is None and isinstance(backend("fake"), FakeASR)
    with pytest.raises(EvalError, match="unknown backend"):
        backend("deepgram")
