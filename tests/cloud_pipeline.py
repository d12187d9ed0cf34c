"""The cloud-path pipeline, run by tests/test_cloud_storage.py in a process whose environment points gs://
at the fake store: upload the demo corpus, prepare it into the bucket, read the records back."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from flmjax import storage
from flmjax.data.config import DEMO_DIR

BUCKET = "gs://flm"


def upload_demo() -> str:
    """The demo's sentence-aligned speech corpus (manifest and audio) in the bucket; returns the manifest."""
    for wav in sorted((DEMO_DIR / "audio").glob("auto_00[0-3].wav")):
        storage.path(f"{BUCKET}/corpus/audio/{wav.name}").write_bytes(wav.read_bytes())
    lines = [json.loads(x) for x in (DEMO_DIR / "speech_auto.jsonl").read_text().splitlines()][:4]
    lines.append({"id": "gone", "audio": "audio/missing.wav", "segments": [{"start": 0, "end": 0.5, "text": "x"}]})
    manifest = f"{BUCKET}/corpus/speech.jsonl"
    storage.path(manifest).write_text("".join(json.dumps(e) + "\n" for e in lines))
    return manifest


def prepare() -> None:
    from flmjax.data import records
    from flmjax.data.prepare import PrepareOptions, prepare_corpus
    from flmjax.mimi import Mimi

    manifest = upload_demo()
    out = f"{BUCKET}/prepared/speech"
    opts = PrepareOptions(shard_size=2)
    report = prepare_corpus(manifest, out, opts, mimi=Mimi.random(seed=0), workers=0, progress=False)
    assert report.records == 5 and report.shards_written == 3, report
    assert report.errors == ["speech.jsonl (gone): audio file not found: gs://flm/corpus/audio/missing.wav"], (
        report.errors
    )
    names = sorted(p.name for p in storage.path(out).glob("*"))
    assert names == ["index.json"] + [f"shard-0000{s}.{x}" for s in range(3) for x in ("array_record", "json")], names
    again = prepare_corpus(manifest, out, opts, mimi=Mimi.random(seed=0), workers=0, progress=False)
    assert again.shards_written == 0 and again.shards_skipped == 3, again
    corpus = records.PreparedCorpus(out)
    assert len(corpus) == 5
    local = Path(tempfile.mkdtemp())  # the same corpus prepared from a local folder: the same records
    (local / "corpus" / "audio").mkdir(parents=True)
    for p in [*storage.path(f"{BUCKET}/corpus").glob("*.jsonl"), *storage.path(f"{BUCKET}/corpus/audio").glob("*")]:
        (local / "corpus" / ("audio/" + p.name if p.parent.name == "audio" else p.name)).write_bytes(p.read_bytes())
    prepare_corpus(local / "corpus" / "speech.jsonl", local / "out", opts, mimi=Mimi.random(seed=0), workers=0,
                   progress=False)  # fmt: skip
    twin = records.PreparedCorpus(local / "out")
    for i in range(len(corpus)):
        (meta, arrays), (meta2, arrays2) = corpus[i], twin[i]
        assert meta.pop("audio").startswith(f"{BUCKET}/corpus/audio/") and meta2.pop("audio").startswith(str(local))
        assert meta == meta2 and arrays.keys() == arrays2.keys(), (meta, meta2)
        assert all(np.array_equal(arrays[k], arrays2[k]) for k in arrays)
    cached = sorted(p.name for p in storage.cache_dir().glob("*"))
    assert len(cached) == len(corpus.shards) and all(n.endswith(".array_record") for n in cached), cached
    print("prepare ok")


def bad_paths() -> None:
    from flmjax.data.corpus import CorpusError, read_manifest
    from flmjax.data.records import PreparedCorpus, PreparedCorpusError

    for call, wanted in (
        (lambda: read_manifest(f"{BUCKET}/nothing.jsonl"), (CorpusError, "gs://flm/nothing.jsonl: manifest not found")),
        (lambda: PreparedCorpus(f"{BUCKET}/nowhere"), (PreparedCorpusError, "gs://flm/nowhere: not a prepared")),
        (
            lambda: storage.local_copy("gs://no-such-bucket/x"),
            (storage.StorageError, "gs://no-such-bucket/x: not found"),
        ),
    ):
        try:
            call()
        except Exception as e:  # noqa: BLE001
            assert isinstance(e, wanted[0]) and str(e).startswith(wanted[1]) and "\n" not in str(e), repr(e)
        else:
            raise AssertionError(f"no error for {wanted[1]}")
    print("errors ok")


def export() -> None:
    """The tiny model exported into the bucket (config.json + safetensors) and loaded back from it."""
    import jax

    from flmjax.model.pretrained import FLMAudio

    model = FLMAudio.init("tiny", seed=0)
    out = f"{BUCKET}/exports/tiny"
    model.save_pretrained(out, dtype="float32")
    assert sorted(p.name for p in storage.path(out).glob("*")) == ["config.json", "model.safetensors"]
    back = FLMAudio.from_pretrained(out, dtype="float32")
    same = jax.tree_util.tree_map(lambda a, b: bool(np.array_equal(np.asarray(a), np.asarray(b))), model.params,
                                  back.params)  # fmt: skip
    assert all(jax.tree_util.tree_leaves(same))
    try:
        FLMAudio.from_pretrained(f"{BUCKET}/exports/none")
    except storage.StorageError as e:
        assert str(e) == "gs://flm/exports/none: no such folder (or an empty one)", e
    else:
        raise AssertionError("no error for a missing export")
    print("export ok")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as cache:
        import os

        os.environ[storage.CACHE_ENV] = cache
        for name in sys.argv[1:]:
            globals()[name]()
