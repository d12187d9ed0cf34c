"""Corpus formats: JSONL manifests (the demo corpus and broken entries) and TFDS datasets on disk."""

import functools
import json
from pathlib import Path

import numpy as np
import pytest

from flmjax.data.config import DEMO_DIR
from flmjax.data.corpus import CorpusError, DialogEntry, SpeechEntry, TfdsSpec, TfdsSpeech, read_manifest


def test_demo_manifests_parse():
    kind, speech = read_manifest(DEMO_DIR / "speech_auto.jsonl")
    assert kind == "speech" and all(isinstance(e, SpeechEntry) for e in speech)
    assert {e.language for e in speech} == {"en", "zh"} and {e.source for e in speech} == {"auto"}
    assert any(len(e.segments) == 2 for e in speech)  # a file may carry several sentences
    worded = [s for e in speech for s in e.segments if s.words]
    assert worded and all(s.start <= w.start <= w.end <= s.end + 1e-3 for s in worded for w in s.words)
    assert all(Path(e.audio.path).is_file() for e in speech)
    assert {e.source for e in read_manifest(DEMO_DIR / "speech_human.jsonl")[1]} == {"human"}

    kind, dialogs = read_manifest(DEMO_DIR / "dialogs.jsonl")
    assert kind == "dialogs" and all(isinstance(d, DialogEntry) for d in dialogs)
    assert {t.role for d in dialogs for t in d.turns} == {"user", "model"}
    assert any(t.audio.start is not None for d in dialogs for t in d.turns)  # turns as spans of one file
    # One dialog has the user talk over the model, which stops: the model turn ends after the user starts.
    overlaps = [
        (a, b)
        for d in dialogs
        for a, b in zip(d.turns, d.turns[1:])
        if a.role == "model" and b.role == "user" and b.start < a.end
    ]
    assert len(overlaps) == 1


def test_broken_entries_are_reported_by_line_and_the_rest_kept(tmp_path):
    good = {
        "id": "ok",
        "audio": "a.wav",
        "language": "en",
        "source": "human",
        "segments": [{"start": 0, "end": 1, "text": "hi"}],
    }
    lines = [
        json.dumps(good),
        "{not json",
        json.dumps({"id": "nosegtext", "audio": "a.wav", "segments": [{"start": 0, "end": 1}]}),
        json.dumps(dict(good, id="backwards", segments=[{"start": 2, "end": 1, "text": "x"}])),
        json.dumps(dict(good, id="badsource", source="crowd")),
        json.dumps(dict(good, id="badwords", segments=[{"start": 0, "end": 1, "text": "a b", "words": [
            {"start": 0.5, "end": 0.6, "text": "a"}, {"start": 0.1, "end": 0.2, "text": "b"}]}])),
        json.dumps({"id": "dlg", "turns": [{"role": "model", "text": "x", "audio": "a.wav", "start": 0}]}),
        "",
        json.dumps(dict(good, id="ok2")),
    ]  # fmt: skip
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(lines), encoding="utf-8")
    kind, items = read_manifest(path)
    assert kind == "speech"
    assert [e.id for e in items if isinstance(e, SpeechEntry)] == ["ok", "ok2"]
    errors = [str(e) for e in items if isinstance(e, CorpusError)]
    expected = [
        "m.jsonl:2: not valid JSON",
        "m.jsonl:3 (nosegtext) segment 0: missing field 'text'",
        "m.jsonl:4 (backwards) segment 0: end 1.0 s is not after start 2.0 s",
        "m.jsonl:5 (badsource): source must be one of",
        "m.jsonl:6 (badwords) segment 0 word 1: times (0.1, 0.2) s out of order",
        "m.jsonl:7: a dialogs entry in a speech manifest",
    ]
    assert len(errors) == len(expected)
    for error, start in zip(errors, expected):
        assert error.startswith(start), error
    assert str(items[0].audio.path) == str(tmp_path / "a.wav")  # relative to the manifest

    turn = {"role": "user", "text": "x", "audio": "a.wav", "start": 1.0}
    dialogs = tmp_path / "dialogs.jsonl"
    dialogs.write_text("\n".join(json.dumps(d) for d in [
        {"id": "fine", "turns": [turn, dict(turn, role="model", audio={"path": "b.wav", "start": 0.5, "end": 1.5},
                                            start=2.0)]},
        {"id": "unordered", "turns": [turn, dict(turn, role="model", start=0.5)]},
        {"id": "badspan", "turns": [dict(turn, audio={"path": "b.wav", "start": 2.0, "end": 1.0})]},
    ]))  # fmt: skip
    kind, items = read_manifest(dialogs)
    assert kind == "dialogs" and items[0].turns[1].audio.start == 0.5
    assert str(items[1]) == "dialogs.jsonl:2 (unordered) turn 1: starts at 0.5 s, before the previous turn"
    assert str(items[2]) == "dialogs.jsonl:3 (badspan) turn 0 audio span: end 1.0 s is not after start 2.0 s"

    bad_role = tmp_path / "d.jsonl"
    bad_role.write_text(json.dumps({"id": 1, "turns": [{"role": "bot", "text": "x", "audio": "a.wav", "start": 0}]}))
    with pytest.raises(CorpusError, match="no valid entry"):
        read_manifest(bad_role)
    with pytest.raises(CorpusError, match="manifest not found"):
        read_manifest(tmp_path / "missing.jsonl")


# --- TFDS --------------------------------------------------------------------------------------------------

SPEECH = [(16000 * 2, "hello world"), (8000, "a short one"), (24000, "the third example")]


@functools.cache
def _tiny_speech_builder():
    """The builder class, defined once (TFDS registers builders by name)."""
    import tensorflow_datasets as tfds

    class TinySpeech(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                features=tfds.features.FeaturesDict(
                    {
                        "speech": tfds.features.Audio(dtype=np.int16, sample_rate=16000),
                        "text": tfds.features.Text(),
                        "id": tfds.features.Text(),
                    }  # fmt: skip
                ),
            )

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            for i, (n, text) in enumerate(SPEECH):
                wave = (np.sin(np.arange(n) * 0.05 * (i + 1)) * 8000).astype(np.int16)
                yield f"k{i}", {"speech": wave, "text": text, "id": f"utt{i}"}

    return TinySpeech


def build_tiny_tfds(data_dir) -> None:
    """A tiny LibriSpeech-like TFDS dataset (int16 Audio feature at 16 kHz) built in `data_dir`."""
    _tiny_speech_builder()(data_dir=str(data_dir), file_format="array_record").download_and_prepare()


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    build_tiny_tfds(data_dir)
    return data_dir


def test_tfds_dataset_maps_to_sentence_aligned_entries(tfds_dir):
    spec = TfdsSpec.parse("tfds:tiny_speech:train", data_dir=str(tfds_dir), source="human")
    assert spec == TfdsSpec("tiny_speech", "train", str(tfds_dir))
    source = TfdsSpeech(spec)
    assert len(source) == len(SPEECH) and source.sample_rate == 16000
    entries = sorted((source[i] for i in range(len(source))), key=lambda e: e.id)
    for i, (entry, (n, text)) in enumerate(zip(entries, SPEECH)):
        assert entry.id == f"utt{i}" and entry.source == "human" and entry.language == "en"
        (segment,) = entry.segments
        assert segment.text == text and segment.start == 0 and segment.end == pytest.approx(n / 16000)
        wave = (np.sin(np.arange(n) * 0.05 * (i + 1)) * 8000).astype(np.int16)
        np.testing.assert_array_equal(entry.audio.samples, wave[None, :] / np.float32(32768))
        assert entry.audio.sample_rate == 16000


def test_tfds_errors_name_the_problem(tfds_dir, tmp_path):
    with pytest.raises(CorpusError, match="tfds:tiny_speech: no feature 'transcript'"):
        TfdsSpeech(TfdsSpec("tiny_speech", data_dir=str(tfds_dir), text_key="transcript"))
    with pytest.raises(CorpusError, match="tfds:nonexistent_corpus:train .* cannot open"):
        TfdsSpeech(TfdsSpec("nonexistent_corpus", data_dir=str(tmp_path)))
    with pytest.raises(CorpusError, match="expected tfds:NAME"):
        TfdsSpec.parse("tfds:")
