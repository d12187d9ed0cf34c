"""The evaluate CLI: timing and wer JSON contracts, and bad input as one line with exit status 2."""

import json

import numpy as np
import pytest
import soundfile

from flmjax.cli.evaluate import main
from tests.eval_helpers import place, speech, write_wav


@pytest.fixture(scope="module")
def conversation(tmp_path_factory):
    d = tmp_path_factory.mktemp("conv")
    user = place(8.0, [(0.5, speech("what should I cook tonight")), (5.5, speech("sounds good"))])
    model = place(8.0, [(2.6, speech("how about a simple tomato pasta", "en-gb+f3"))])
    write_wav(d / "user.wav", user)
    write_wav(d / "model.wav", model)
    soundfile.write(d / "stereo.wav", np.stack([user, model], axis=1), 16_000, subtype="PCM_16")
    write_wav(d / "model_24k.wav", np.interp(np.arange(192_000) / 1.5, np.arange(len(model)), model), 24_000)
    return d


def test_timing_contract(conversation, capsys, tmp_path):
    assert main(["timing", "--user", str(conversation / "user.wav"), "--model", str(conversation / "model.wav"),
                 "--json"]) == 0  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert out["duration_s"] == 8.0 and len(out["ipus"]["user"]) == 2 and len(out["ipus"]["model"]) == 1
    assert {k: set(v) for k, v in out["per_minute"].items()} == {
        k: {"count", "seconds"} for k in ("pause", "gap", "overlap")
    }
    assert out["per_minute"]["gap"]["count"] == 2 / (8 / 60)  # user -> model, model -> user
    (tmp_path / "ref.json").write_text(json.dumps(out))
    assert main(["timing", "--stereo", str(conversation / "stereo.wav"), "--reference", str(tmp_path / "ref.json"),
                 "--json"]) == 0  # fmt: skip
    again = json.loads(capsys.readouterr().out)
    assert again["per_minute"] == out["per_minute"] and again["delta"] == {"pause": 0.0, "gap": 0.0, "overlap": 0.0}
    # A model channel at another rate is resampled, and said so.
    assert (
        main(["timing", "--user", str(conversation / "user.wav"), "--model", str(conversation / "model_24k.wav")]) == 0
    )
    assert "24000 Hz resampled to 16000 Hz" in capsys.readouterr().err


def test_timing_bad_input(conversation, tmp_path, capsys):
    write_wav(tmp_path / "short.wav", np.zeros(16_000, np.float32))
    soundfile.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16_000)
    cases = [
        (["--user", str(conversation / "user.wav"), "--model", str(tmp_path / "short.wav")], "must be time-aligned"),
        (["--user", str(conversation / "user.wav"), "--model", str(tmp_path / "empty.wav")], "empty.wav"),
        (["--user", str(conversation / "user.wav"), "--model", str(tmp_path / "missing.wav")], "missing.wav"),
        (["--stereo", str(conversation / "user.wav")], "expected 2 channels"),
        (["--user", str(conversation / "user.wav")], "timing takes"),
    ]
    for args, message in cases:
        assert main(["timing", *args]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and message in err and "\n" not in err


def test_wer_contract(tmp_path, capsys):
    (tmp_path / "ref.txt").write_text("The cat sat on the mat.\nHello, world!\n")
    (tmp_path / "hyp.txt").write_text("the cat sit on mat\nhello big world\n")
    assert main(["wer", "--ref", str(tmp_path / "ref.txt"), "--hyp", str(tmp_path / "hyp.txt"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {k: out[k] for k in ("wer", "words", "substitutions", "deletions", "insertions")} == {
        "wer": 3 / 8, "words": 8, "substitutions": 1, "deletions": 1, "insertions": 1}  # fmt: skip
    # JSONL paired by id (in another order), per utterance (Seed-TTS), Chinese.
    (tmp_path / "r.jsonl").write_text('{"id": "a", "text": "漢語很難"}\n{"id": "b", "text": "你好"}\n')
    (tmp_path / "h.jsonl").write_text('{"id": "b", "text": "你好"}\n{"id": "a", "text": "汉语很难了"}\n')
    assert main(["wer", "--ref", str(tmp_path / "r.jsonl"), "--hyp", str(tmp_path / "h.jsonl"), "--lang", "zh",
                 "--per-utterance", "--json"]) == 0  # fmt: skip
    zh = json.loads(capsys.readouterr().out)
    assert zh["cer"] == 1 / 6 and zh["chars"] == 6 and zh["mean_cer"] == (0.25 + 0) / 2
    (tmp_path / "h2.txt").write_text("just one line\n")
    assert main(["wer", "--ref", str(tmp_path / "ref.txt"), "--hyp", str(tmp_path / "h2.txt")]) == 2
    assert "1 utterances but" in capsys.readouterr().err
    (tmp_path / "bad.jsonl").write_text('{"id": "a"}\n')
    assert main(["wer", "--ref", str(tmp_path / "bad.jsonl"), "--hyp", str(tmp_path / "h.jsonl")]) == 2
    assert "line 1 has no 'text'" in capsys.readouterr().err


def test_qa(tmp_path, capsys):
    (tmp_path / "a.jsonl").write_text('{"answers": ["Paris"]}\n{"answers": "five"}\n')
    (tmp_path / "h.txt").write_text("It is Paris.\nfour\n")
    assert main(["qa", "--answers", str(tmp_path / "a.jsonl"), "--hyp", str(tmp_path / "h.txt"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"accuracy": 0.5, "items": 2, "correct": 1}
