"""Preparation on several hosts: two processes (each encoding on two local CPU devices) give the very bytes
one process gives, and a re-run after a host died redoes that host's unfinished shard and nothing else."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flmjax.data import records
from flmjax.data.config import DEMO_DIR
from flmjax.data.prepare import Hosts, PrepareOptions, prepare_corpus
from tests.prepare_host import tiny_mimi

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    """Three one-sentence demo files and a missing file: four shards of one entry."""
    demo = [json.loads(line) for line in (DEMO_DIR / "speech_auto.jsonl").read_text().splitlines()]
    demo = [dict(e, audio=str(DEMO_DIR / e["audio"])) for e in demo if e["id"] in ("auto_000", "auto_001", "auto_003")]
    demo.insert(2, dict(demo[0], id="gone", audio=str(DEMO_DIR / "audio" / "gone.wav")))
    path = tmp_path_factory.mktemp("corpus") / "speech.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in demo))
    return path


def _files(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.iterdir())}


def test_two_hosts_write_the_bytes_of_one_and_a_rerun_redoes_only_a_dead_hosts_shard(manifest, tmp_path):
    one = tmp_path / "one"
    mimi = tiny_mimi()
    report = prepare_corpus(manifest, one, PrepareOptions(shard_size=1), mimi=mimi, workers=0, progress=False)
    assert report.complete and report.shards_written == 4 and len(report.errors) == 1

    two = tmp_path / "two"
    env = dict(os.environ, PYTHONPATH=str(ROOT), XLA_FLAGS="--xla_force_host_platform_device_count=2")
    args = [str(manifest), "--out", str(two), "--shard-size", "1", "--workers", "0", "--no-progress"]
    args += ["--num-hosts", "2"]
    hosts = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.prepare_host", *args, "--host-index", str(k)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for k in range(2)
    ]
    outputs = [h.communicate(timeout=600)[0] for h in hosts]
    assert [h.returncode for h in hosts] == [0, 0], outputs
    assert any("index not written yet" in out for out in outputs)  # the host finishing first leaves it
    assert _files(two) == _files(one)

    # Host 1 dies while writing shard 3 (shards 1 and 3 are its): a kill leaves the temporary file and no
    # marker (the marker is written after the shard), and the index was not written.
    records.marker_path(two, 3).unlink()
    records.shard_path(two, 3).rename(records.shard_path(two, 3).with_name("shard-00003.array_record.tmp"))
    (two / records.INDEX).unlink()
    before = {p.name: p.stat().st_mtime_ns for p in two.iterdir()}
    again = prepare_corpus(manifest, two, PrepareOptions(shard_size=1), mimi=mimi, workers=0, progress=False,
                           hosts=Hosts(1, 2))  # fmt: skip
    assert (again.shards_written, again.shards_skipped, again.complete) == (1, 1, True)
    after = {p.name: p.stat().st_mtime_ns for p in two.iterdir()}
    changed = sorted(name for name in after if before.get(name) != after[name])
    assert changed == ["index.json", "shard-00003.array_record", "shard-00003.json"]
    assert _files(two) == _files(one)
    idle = prepare_corpus(manifest, two, PrepareOptions(shard_size=1), mimi=mimi, workers=0, progress=False,
                          hosts=Hosts(0, 2))  # fmt: skip
    assert (idle.shards_written, idle.shards_skipped, idle.records) == (0, 2, 3) and idle.complete


def test_host_index_must_be_in_range():
    with pytest.raises(ValueError, match="host index 2 is not in"):
        Hosts(2, 2)
