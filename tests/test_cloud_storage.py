"""gs:// paths end to end against a local fake of Cloud Storage (gcp-storage-emulator): a corpus read from
the bucket is prepared into it and read back through Grain (tests/cloud_pipeline.py)."""

import pytest

from tests.cloud_store import fake_gcs, run_in_store


def _run(*stages: str) -> str:
    with fake_gcs() as env:
        done = run_in_store(env, "tests.cloud_pipeline", *stages)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return done.stdout


def test_prepare_reads_and_writes_the_bucket_and_bad_paths_fail_in_one_line():
    out = _run("prepare", "bad_paths")
    assert "prepare ok" in out and "errors ok" in out


def test_an_export_is_written_to_the_bucket_and_loads_back_from_it():
    assert "export ok" in _run("export")


@pytest.mark.slow
def test_training_reads_and_writes_its_run_in_the_bucket_and_resumes_there():
    assert "train ok" in _run("train")
