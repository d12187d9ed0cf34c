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


TRAIN_CONFIG = """
from flmjax.config import Numerics
from flmjax.data.config import POST_TRAINING, CorpusSpec, DataConfig
from flmjax.data.layouts import LayoutConfig
from flmjax.train.config import CheckpointConfig, InitConfig, LogConfig, OptimizerConfig, TrainConfig


def config():
    return TrainConfig(
        stage="cloud", model="school", numerics=Numerics(dtype="float32", remat="none"),
        data=DataConfig("words", POST_TRAINING, (CorpusSpec("words", prepared={corpus!r}),), global_batch=2,
                        layout_config=LayoutConfig(sample_frames=96), tokenizer="words"),
        steps=3, optimizer=OptimizerConfig(peak_lr=1e-3, end_lr=1e-4),
        checkpoint=CheckpointConfig(every_steps=2, keep=2),
        log=LogConfig(every_steps=1, progress=False, eval_batches=0), init=InitConfig(random_ok=True),
        run_root={root!r},
    )
"""


def train() -> None:
    """prepare (bucket -> bucket) -> 3 steps with the run directory in the bucket -> resumed there for a 4th,
    exported into the bucket -> loaded back from the run and from the export; the same losses and
    parameters as the same two runs in a local run directory."""
    import contextlib
    import io
    import os

    os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")  # compiles faster on a CPU
    import jax

    from flmjax.cli import train as train_cli
    from flmjax.data.curriculum import vocabulary
    from flmjax.data.prepare import PrepareOptions, prepare_corpus
    from flmjax.mimi import Mimi
    from flmjax.model.pretrained import FLMAudio

    manifest, words = upload_demo(), vocabulary()
    entries = [json.loads(x) for x in storage.path(manifest).read_text().splitlines()]
    for i, segment in enumerate(s for e in entries for s in e["segments"]):  # texts the small model's words spell
        segment["text"] = "".join(words[4 * i : 4 * i + 4]).strip()
    storage.path(manifest).write_text("".join(json.dumps(e) + "\n" for e in entries))
    prepared = f"{BUCKET}/prepared/words"
    opts = PrepareOptions(shard_size=2, tokenizer="words")
    report = prepare_corpus(manifest, prepared, opts, mimi=Mimi.random(seed=0), workers=0, progress=False)
    assert report.records == 5, report
    local = Path(tempfile.mkdtemp())
    config = local / "cloud.py"
    config.write_text(TRAIN_CONFIG.format(corpus=prepared, root=str(local / "runs")))  # compile cache: local
    run, export = f"{BUCKET}/runs/cloud", f"{BUCKET}/exports/cloud"

    def launch(*args: str) -> str:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = train_cli.main([f"--config={config}", *args])
        assert code == 0, out.getvalue()
        return out.getvalue()

    first = launch(f"--run_dir={run}")
    assert "steps 3/3" in first and "started from random parameters" in first, first
    saved = sorted(int(p.name) for p in storage.path(f"{run}/checkpoints").iterdir() if p.name.isdigit())
    assert saved == [2, 3], saved
    second = launch(f"--run_dir={run}", "--steps=4", f"--export.dir={export}", "--export.dtype=float32")
    assert f"started from resumed {run}/checkpoints/3" in second and f"exported to {export}" in second, second
    saved = sorted(int(p.name) for p in storage.path(f"{run}/checkpoints").iterdir() if p.name.isdigit())
    assert saved == [3, 4], saved  # keep=2
    rows = [json.loads(x) for x in storage.path(f"{run}/metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4], rows  # the resumed run appended to the first's lines
    events = [p.name for p in storage.path(f"{run}/tensorboard").iterdir()]
    assert len(events) == 2 and all(n.startswith("events.out.tfevents") for n in events), events  # one per run
    # A next stage starts from the bucket's export or run (--model=base: its architecture is read there too).
    for name, start in (("from-export", export), ("from-run", run)):
        args = ("--steps=1", "--model=base", f"--init.params_from={start}", "--init.random_ok=false")
        out = launch(f"--run_dir={BUCKET}/runs/{name}", *args)
        assert f"started from parameters from {start})" in out, out
    twin = local / "twin"  # the same two runs in a local run directory: the same losses and parameters
    launch(f"--run_dir={twin}")
    launch(f"--run_dir={twin}", "--steps=4")
    twin_rows = [json.loads(x) for x in (twin / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in rows] == [r["loss"] for r in twin_rows], (rows, twin_rows)
    want = FLMAudio.from_pretrained(twin)
    for other in (FLMAudio.from_pretrained(run), FLMAudio.from_pretrained(export)):
        same = jax.tree_util.tree_map(lambda a, b: bool(np.array_equal(np.asarray(a), np.asarray(b))),
                                      want.params, other.params)  # fmt: skip
        assert all(jax.tree_util.tree_leaves(same))
    print("train ok")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as cache:
        import os

        os.environ[storage.CACHE_ENV] = cache
        for name in sys.argv[1:]:
            globals()[name]()
