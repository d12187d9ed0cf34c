"""A local fake of Google Cloud Storage (gcp-storage-emulator, in memory, on a free port) and the
environment that points gcsfs and etils.epath at it; the pipeline under test runs in a subprocess with
that environment, so nothing of ours is mocked."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _send_generations() -> None:
    """Cloud Storage sends an object's generation with its bytes (`x-goog-generation`); the emulator does
    not, and TensorStore (Orbax's arrays) refuses a re-read OCDBT manifest without it ("Malformed
    StorageGeneration"). The emulator's download handler, wrapped to send it."""
    from gcp_storage_emulator import server
    from gcp_storage_emulator.handlers import objects

    original = objects.download
    if getattr(original, "sends_generation", False):
        return

    def download(request, response, storage, *args, **kwargs):
        original(request, response, storage, *args, **kwargs)
        with contextlib.suppress(Exception):  # not found: the original answered 404
            obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
            response["x-goog-generation"] = str(obj["generation"])
            response["x-goog-metageneration"] = str(obj.get("metageneration") or 1)

    download.sends_generation = True  # type: ignore[attr-defined]
    objects.download = download  # objects.get's alt=media path calls it by this name
    for _, handlers in server.HANDLERS:
        for method, handler in list(handlers.items()):
            if handler is original:
                handlers[method] = download


@contextlib.contextmanager
def fake_gcs(bucket: str = "flm"):
    """Yields the environment a process needs to use gs://<bucket>/... on the emulator."""
    from gcp_storage_emulator.server import create_server

    _send_generations()
    port = _free_port()
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket=bucket)
    server.start()
    try:
        yield {
            "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{port}",
            "EPATH_USE_TF": "false",  # epath's gs:// through fsspec/gcsfs (tf.io.gfile knows no emulator)
            "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",  # no gRPC bucket-type probe (the fake has no gRPC)
            "FSSPEC_GS_TOKEN": "anon",
            "FSSPEC_GS_PROJECT": "test",
            # Orbax's arrays go through TensorStore's own gcs driver: pointed at the fake, a test token
            "TENSORSTORE_GCS_HTTP_URL": f"http://127.0.0.1:{port}",
            "GOOGLE_AUTH_TOKEN_FOR_TESTING": "fake",
        }
    finally:
        server.stop()


def run_in_store(env: dict[str, str], module: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    full = dict(os.environ, **env, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    return subprocess.run(
        [sys.executable, "-m", module, *args], env=full, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
