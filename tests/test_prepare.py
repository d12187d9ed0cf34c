"""Corpus preparation with a random Mimi: records carry the right codes and ids, bad entries are reported
by name while the rest is prepared, a re-run skips finished shards, dialogs get augmented variants."""

import json
import shutil
import wave

import numpy as np
import pytest

from flmjax import audio
from flmjax.data import prepare, records
from flmjax.data.augment import AugmentConfig
from flmjax.data.config import DEMO_DIR
from flmjax.data.corpus import read_manifest
from flmjax.data.encoding import CodesCache, encode_batched
from flmjax.data.prepare import PrepareOptions, prepare_corpus
from flmjax.data.text_tokenizer import load_text_tokenizer
from flmjax.tokens import SAMPLE_RATE, SAMPLES_PER_FRAME
from tests.test_corpus import SPEECH, build_tiny_tfds


@pytest.fixture(scope="session")
def mimi():
    from flmjax.mimi import Mimi

    return Mimi.random(seed=0)


def _wav(path, samples, rate=16000):
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.asarray(samples, "<i2").tobytes())


@pytest.fixture
def corpus(tmp_path):
    """Two good files (three sentences), then a corrupt, an empty, a missing file and a too-long transcript."""
    (tmp_path / "a").mkdir()
    for name in ("auto_000.wav", "auto_002.wav"):
        shutil.copy(DEMO_DIR / "audio" / name, tmp_path / "a" / name)
    (tmp_path / "a" / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt garbage")
    _wav(tmp_path / "a" / "empty.wav", [])
    demo = {e["id"]: e for e in map(json.loads, (DEMO_DIR / "speech_auto.jsonl").read_text().splitlines())}
    seg = {"start": 0.0, "end": 0.5, "text": "ok"}
    long_text = "This sentence is far too long to be spoken in half a second of audio, by anyone at all."
    entries = [
        dict(demo["auto_000"], audio="a/auto_000.wav"),
        {"id": "corrupt", "audio": "a/corrupt.wav", "segments": [seg]},
        {"id": "empty", "audio": "a/empty.wav", "segments": [seg]},
        {"id": "missing", "audio": "a/missing.wav", "segments": [seg]},
        {"id": "toolong", "audio": "a/auto_000.wav", "segments": [dict(seg, text=long_text)]},
        dict(demo["auto_002"], audio="a/auto_002.wav"),
    ]
    manifest = tmp_path / "speech.jsonl"
    manifest.write_text("".join(json.dumps(e) + "\n" for e in entries))
    return manifest


def test_prepare_reports_bad_entries_by_name_and_a_rerun_skips_finished_shards(corpus, tmp_path, mimi):
    out = tmp_path / "out"
    opts = PrepareOptions(shard_size=2)
    report = prepare_corpus(corpus, out, opts, mimi=mimi, workers=0, progress=False)
    assert report.records == 3 and report.kind == "speech"  # auto_000 (1 sentence) + auto_002 (2)
    assert (report.shards_written, report.shards_skipped) == (3, 0)
    assert len(report.errors) == 4
    corrupt, empty, missing, toolong = report.errors
    assert "speech.jsonl (corrupt)" in corrupt and "cannot decode audio" in corrupt and "corrupt.wav" in corrupt
    assert "speech.jsonl (empty)" in empty and "holds no samples" in empty and "empty.wav" in empty
    assert "speech.jsonl (missing)" in missing and "audio file not found" in missing and "missing.wav" in missing
    assert "speech.jsonl (toolong) segment 0" in toolong and "longer than its audio can carry" in toolong

    tok = load_text_tokenizer()
    kind, entries = read_manifest(corpus)
    good = [(e, k) for e in entries if e.id in ("auto_000", "auto_002") for k in range(len(e.segments))]
    prepared = records.PreparedCorpus(out)
    assert prepared.num_records == 3 and prepared.silence_codes.shape == (8, 1)
    for i, (entry, k) in enumerate(good):
        meta, arrays = prepared[i]
        seg = entry.segments[k]
        assert meta["id"] == f"{entry.id}/{k}" and meta["source"] == "auto"
        assert arrays["text"].tolist() == tok.encode(seg.text)
        clip = audio.prepare_for_mimi(*audio.load_audio(entry.audio.path))[0]
        clip = clip[int(round(seg.start * SAMPLE_RATE)) : int(round(seg.end * SAMPLE_RATE))]
        assert arrays["codes"].shape == (8, -(-len(clip) // SAMPLES_PER_FRAME))
        if i == 2:  # the last sentence of a two-sentence file, encoded on its own: the same codes
            np.testing.assert_array_equal(arrays["codes"], encode_batched(mimi, [clip])[0])
        pair = records.pair_from_record(meta, arrays)
        assert (pair.words is not None) == (seg.words is not None)
        if pair.words:  # word tokens concatenate to the sentence's tokens
            assert [t for w in pair.words for t in w.tokens] == tok.encode(seg.text)

    again = prepare_corpus(corpus, out, opts, mimi=mimi, workers=0, progress=False)
    assert (again.shards_written, again.shards_skipped) == (0, 3)
    assert again.records == report.records and again.errors == report.errors
    lines = corpus.read_text().splitlines()
    entry = json.loads(lines[5])
    entry["segments"] = entry["segments"][:1]  # the last shard changes: auto_002 keeps one sentence
    corpus.write_text("\n".join(lines[:5] + [json.dumps(entry)]) + "\n")
    third = prepare_corpus(corpus, out, opts, mimi=mimi, workers=0, progress=False)
    assert (third.shards_written, third.shards_skipped) == (1, 2)
    assert records.PreparedCorpus(out).num_records == 2


def _demo_dialogs() -> list[dict]:
    """The demo's dialogs with absolute audio paths (to be written into a manifest elsewhere)."""
    demo = [json.loads(line) for line in (DEMO_DIR / "dialogs.jsonl").read_text().splitlines()]
    for d in demo:
        for t in d["turns"]:
            if isinstance(t["audio"], str):
                t["audio"] = str(DEMO_DIR / t["audio"])
            else:
                t["audio"]["path"] = str(DEMO_DIR / t["audio"]["path"])
    return demo


def test_dialogs_get_augmented_listen_variants(tmp_path, mimi):
    demo = _demo_dialogs()
    broken = json.loads(json.dumps(demo[0]))
    broken["id"] = "broken"
    broken["turns"][2]["audio"] = str(tmp_path / "nowhere.wav")
    manifest = tmp_path / "dialogs.jsonl"
    manifest.write_text("".join(json.dumps(d) + "\n" for d in [demo[2], broken, demo[1]]))
    opts = PrepareOptions(layout="response_tts_free", variants=2, augment=AugmentConfig(leakage_prob=1.0))
    report = prepare_corpus(manifest, tmp_path / "out", opts, mimi=mimi, workers=0, progress=False)
    assert report.records == 2 and report.kind == "dialogs"
    (error,) = report.errors
    assert "dialogs.jsonl (broken) turn 2" in error and "nowhere.wav" in error
    prepared = records.PreparedCorpus(tmp_path / "out")
    assert prepared.index["layout"] == "response_tts_free" and prepared.index["variants"] == 2
    for r, source in enumerate([demo[2], demo[1]]):
        meta, arrays = prepared[r]
        assert meta["id"] == source["id"] and len(meta["turns"]) == len(source["turns"])
        for v in range(2):
            turns, plan, listen = records.dialog_from_record(meta, arrays, v)
            assert listen.shape == (8, plan.num_frames - 1)  # the listen track spans the planned dialog
        assert not np.array_equal(arrays["listen0"][:, :50], arrays["listen1"][:, :50])  # different noise per variant
        for k, t in enumerate(source["turns"]):
            assert turns[k]["role"] == t["role"] and turns[k]["start_frame"] == round(t["start"] * 12.5)
    # The corpus's interrupted model turn was cut at its `end`: its codes stop there.
    meta, arrays = prepared[1]
    model = demo[1]["turns"][1]
    assert arrays["turn1"].shape[1] == -(-round((model["end"] - model["start"]) * SAMPLE_RATE) // SAMPLES_PER_FRAME)


def test_a_codes_cache_encodes_each_clip_once_across_preparations(tmp_path, mimi, monkeypatch):
    demo = _demo_dialogs()[:2]
    manifest = tmp_path / "dialogs.jsonl"
    manifest.write_text("".join(json.dumps(d) + "\n" for d in demo))
    encoded: list[int] = []

    def counting(mimi, clips, batch_size=8):
        encoded.append(len(clips))
        return encode_batched(mimi, clips, batch_size)

    monkeypatch.setattr(prepare, "encode_batched", counting)
    cache = CodesCache(tmp_path / "codes", "random-mimi(seed=0)")
    clean = PrepareOptions(layout="asr_response_tts")
    noisy = PrepareOptions(layout="response_tts_free", variants=2, augment=AugmentConfig(leakage_prob=0.0))
    turns = sum(len(d["turns"]) for d in demo)
    prepare_corpus(manifest, tmp_path / "ft1", clean, mimi=mimi, workers=0, progress=False, codes_cache=cache)
    assert encoded == [turns]  # every turn once (no augmentation: no listen tracks)
    prepare_corpus(manifest, tmp_path / "ft2", noisy, mimi=mimi, workers=0, progress=False, codes_cache=cache)
    assert encoded == [turns, 2 * len(demo)]  # the turns from the cache; only the augmented tracks are new
    prepare_corpus(manifest, tmp_path / "again", noisy, mimi=mimi, workers=0, progress=False)  # no cache
    for name in ("ft2", "again"):  # the same records with and without the cache
        assert (tmp_path / name / records.INDEX).exists()
    a, b = records.PreparedCorpus(tmp_path / "ft2"), records.PreparedCorpus(tmp_path / "again")
    for r in range(len(demo)):
        for key, value in a[r][1].items():
            np.testing.assert_array_equal(value, b[r][1][key], err_msg=key)


def test_tfds_corpus_prepares_like_a_manifest(tmp_path, mimi):
    build_tiny_tfds(tmp_path / "tfds")
    report = prepare_corpus("tfds:tiny_speech:train", tmp_path / "out", PrepareOptions(), mimi=mimi, workers=0,
                            progress=False, tfds_options={"data_dir": str(tmp_path / "tfds")})  # fmt: skip
    assert report.records == len(SPEECH) and not report.errors
    prepared = records.PreparedCorpus(tmp_path / "out")
    texts = sorted(prepared[i][0]["text"] for i in range(len(SPEECH)))
    assert texts == sorted(text for _, text in SPEECH)
    for i in range(len(SPEECH)):
        meta, arrays = prepared[i]
        n = dict((text, n) for n, text in SPEECH)[meta["text"]]
        assert arrays["codes"].shape == (8, -(-(n * 3 // 2) // SAMPLES_PER_FRAME))  # 16 kHz -> 24 kHz


def test_cli_exit_status(corpus, tmp_path, mimi, monkeypatch, capsys):
    from tests.test_pipeline import _load_launch

    prepare_data = _load_launch("prepare_data")
    monkeypatch.setattr(prepare, "LazyMimi", lambda name, log: mimi)  # reuse the compiled codec
    lines = corpus.read_text().splitlines()
    corpus.write_text("\n".join(lines[:5]) + "\n")  # one good sentence and the four broken entries
    args = [str(corpus), "--out", str(tmp_path / "out"), "--no-progress", "--workers", "2"]
    assert prepare_data.main(args) == 0
    out = capsys.readouterr().out
    assert "1 speech records" in out and "4 entries or segments skipped" in out and "missing.wav" in out
    assert prepare_data.main(args + ["--strict"]) == 1
    corpus.write_text("\n".join(lines[1:5]) + "\n")  # only the broken entries
    assert prepare_data.main([str(corpus), "--out", str(tmp_path / "bad"), "--no-progress", "--workers", "0"]) == 1
    assert "no entry could be prepared" in capsys.readouterr().err
    assert prepare_data.main([str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "x")]) == 2
    assert "manifest not found" in capsys.readouterr().err


def _hf_examples(tmp_path):
    """A Hugging Face audio dataset: two good examples (embedded WAV bytes, and a file by path), then
    corrupt audio and an empty transcript."""
    import io

    import soundfile

    def wav_bytes(seconds, rate=16000):
        buffer = io.BytesIO()
        tone = 0.3 * np.sin(np.arange(int(seconds * rate)) * 0.05).astype(np.float32)
        soundfile.write(buffer, tone, rate, format="WAV")
        return buffer.getvalue()

    shutil.copy(DEMO_DIR / "audio" / "auto_000.wav", tmp_path / "by_path.wav")
    return {
        "id": ["tone", "file", "corrupt", "silent"],
        "audio": [{"bytes": wav_bytes(1.0), "path": "tone.wav"}, {"bytes": None, "path": str(tmp_path / "by_path.wav")},
                  {"bytes": b"RIFF garbage", "path": "corrupt.wav"}, {"bytes": wav_bytes(0.5), "path": "s.wav"}],
        "transcript": ["a tone", "the birch canoe", "broken", " "],
    }  # fmt: skip


def test_hf_dataset_prepares_with_bad_examples_named(tmp_path, mimi, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    ds = datasets.Dataset.from_dict(_hf_examples(tmp_path)).cast_column("audio", datasets.Audio())
    (tmp_path / "parquet").mkdir()
    ds.to_parquet(str(tmp_path / "parquet" / "train-00000-of-00001.parquet"))
    options = {"text_key": "transcript", "language": "en"}
    report = prepare_corpus(f"hf:{tmp_path / 'parquet'}:train", tmp_path / "out", PrepareOptions(), mimi=mimi,
                            workers=0, progress=False, hf_options=options)  # fmt: skip
    assert report.records == 2 and report.kind == "speech"
    corrupt, silent = report.errors
    assert f"hf:{tmp_path / 'parquet'}:train[2] (corrupt)" in corrupt and "cannot decode audio" in corrupt
    assert "[3] (silent): empty text" in silent
    prepared = records.PreparedCorpus(tmp_path / "out")
    (tone, tone_arrays), (_, file_arrays) = prepared[0], prepared[1]
    assert (tone["id"], tone["text"], tone["language"], tone["source"]) == ("tone/0", "a tone", "en", "human")
    assert tone_arrays["codes"].shape == (8, 13)  # 1 s at 16 kHz -> 24000 samples -> 12.5 frames
    clip = audio.prepare_for_mimi(*audio.load_audio(tmp_path / "by_path.wav"))[0]
    np.testing.assert_array_equal(file_arrays["codes"], encode_batched(mimi, [clip])[0])

    ds.save_to_disk(str(tmp_path / "saved"))  # a save_to_disk folder opens in place, its one split by default
    from flmjax.data.sources import open_source

    kind, refs, labels = open_source(f"hf:{tmp_path / 'saved'}", hf_options={"text_key": "transcript"})
    assert (kind, len(refs), labels[1]) == ("speech", 4, f"hf:{tmp_path / 'saved'}[1]")
    with pytest.raises(ValueError, match="no column 'text'"):
        open_source(f"hf:{tmp_path / 'saved'}")
