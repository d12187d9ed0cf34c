"""One path abstraction for local folders and object stores (gs://, s3://, az://, hf://; through
`etils.epath`, which Orbax uses as well: with TensorFlow installed its gs:// goes through `tf.io.gfile`,
with `EPATH_USE_TF=false` through fsspec/gcsfs).

Local paths stay `pathlib.Path`s, so nothing changes for them. A remote path is an `epath.Path`, which has
the same methods (`/`, `read_text`, `write_bytes`, `exists`, `glob`, `mkdir`, `unlink`, `name`, `parent`).
What a store cannot do in place is done through a local file:
- `upload`: write a file locally (ArrayRecord's writer needs one), then copy it to its remote place; an
  object appears whole or not at all, so the copy is the commit (locally: `os.replace`).
- `local_copy`: ArrayRecord's reader (Grain's `ArrayRecordDataSource`) reads local files only, so remote
  shards are staged into a cache folder (`$FLMJAX_REMOTE_CACHE`, default `~/.cache/flmjax/remote`) under a
  key of their remote path, size and modification time: a re-prepared shard is fetched afresh.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from flmjax.errors import FlmjaxError

SCHEMES = ("gs://", "s3://", "az://", "hf://")
CACHE_ENV = "FLMJAX_REMOTE_CACHE"


class StorageError(FlmjaxError):
    """A remote path that cannot be read or written."""


def is_remote(path: Any) -> bool:
    return str(path).startswith(SCHEMES)


def absolute(p: str | os.PathLike) -> str:
    """A remote path as it is, a local one made absolute (for paths kept beyond a change of directory)."""
    return str(p) if is_remote(p) else os.path.abspath(p)


def path(p: str | os.PathLike) -> Any:
    """`pathlib.Path` for a local path, `epath.Path` for a remote one (same interface)."""
    if isinstance(p, Path):
        return p
    if is_remote(p):
        from etils import epath

        return epath.Path(str(p))
    if str(p).startswith("file://"):
        return Path(str(p)[len("file://") :])
    return Path(p)


def exists(p: str | os.PathLike) -> bool:
    try:
        return path(p).exists()
    except FileNotFoundError:
        return False
    except Exception as e:  # noqa: BLE001 - a store's own errors (credentials, network, no bucket)
        raise StorageError(f"{p}: cannot be reached ({type(e).__name__}: {_first_line(e)})") from None


def read_bytes(p: str | os.PathLike) -> bytes:
    """A file's bytes; FileNotFoundError when it is not there, StorageError when the store fails."""
    try:
        return path(p).read_bytes()
    except FileNotFoundError:
        raise
    except Exception as e:  # noqa: BLE001
        if not is_remote(p):
            raise
        raise StorageError(f"{p}: cannot be read ({type(e).__name__}: {_first_line(e)})") from None


def write_bytes_atomic(p: str | os.PathLike, data: bytes) -> None:
    """Write a whole file: locally to a temporary name, then renamed; remotely one object write."""
    target = path(p)
    if not is_remote(target):
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)
        return
    try:
        target.write_bytes(data)
    except Exception as e:  # noqa: BLE001
        raise StorageError(f"{p}: cannot be written ({type(e).__name__}: {_first_line(e)})") from None


def upload(local: str | os.PathLike, p: str | os.PathLike) -> None:
    """Move a finished local file to `p` (a rename locally, a copy to the store remotely)."""
    if not is_remote(p):
        os.replace(local, path(p))
        return
    try:
        _copy_to_store(local, p)
    finally:
        os.unlink(local)


def _copy_to_store(local: str | os.PathLike, p: str | os.PathLike) -> None:
    try:
        with open(local, "rb") as src, path(p).open("wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 22)
    except Exception as e:  # noqa: BLE001
        raise StorageError(f"{p}: cannot be written ({type(e).__name__}: {_first_line(e)})") from None


def staging_file(p: str | os.PathLike) -> str:
    """Where to write a file bound for `p` before `upload`: next to it locally, a temp file otherwise."""
    if not is_remote(p):
        target = path(p)
        target.parent.mkdir(parents=True, exist_ok=True)
        return str(target.with_name(target.name + ".tmp"))
    fd, name = tempfile.mkstemp(prefix="flmjax-", suffix="-" + path(p).name)
    os.close(fd)
    return name


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "flmjax" / "remote")


def local_copy(p: str | os.PathLike) -> str:
    """A local path holding the file `p`: itself when local, else a cached copy (see the module doc)."""
    if not is_remote(p):
        return str(p)
    remote = path(p)
    try:
        stat = remote.stat()
    except FileNotFoundError:
        raise StorageError(f"{p}: not found") from None
    except Exception as e:  # noqa: BLE001
        raise StorageError(f"{p}: cannot be reached ({type(e).__name__}: {_first_line(e)})") from None
    key = hashlib.sha256(f"{p}|{stat.length}|{stat.mtime}".encode()).hexdigest()[:16]
    local = cache_dir() / f"{key}-{remote.name}"
    if local.exists() and local.stat().st_size == stat.length:
        return str(local)
    local.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=local.parent, prefix=".part-")
    try:
        with os.fdopen(fd, "wb") as dst, remote.open("rb") as src:
            shutil.copyfileobj(src, dst, 1 << 22)
        os.replace(tmp, local)
    except Exception as e:  # noqa: BLE001
        Path(tmp).unlink(missing_ok=True)
        raise StorageError(f"{p}: cannot be read ({type(e).__name__}: {_first_line(e)})") from None
    return str(local)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else "no detail"


def upload_folder(local_dir: str | os.PathLike, p: str | os.PathLike) -> None:
    """Copy the files of a finished local folder (not its subfolders) into the remote folder `p`; the
    remote folder's other `model*` files (an earlier export's shards) are removed first."""
    target = path(p)
    try:
        stale = list(target.glob("model*")) if target.exists() else []
    except FileNotFoundError:
        stale = []
    for f in stale:
        f.unlink(missing_ok=True)
    # config.json last: it marks a finished export
    for name in sorted(os.listdir(local_dir), key=lambda n: (n == "config.json", n)):
        src = Path(local_dir) / name
        if src.is_file():
            _copy_to_store(src, target / name)


def local_folder(p: str | os.PathLike) -> str:
    """A local folder holding the files of folder `p` (not its subfolders): itself when local, else each
    file staged by `local_copy` into one cache folder keyed by `p` and the files' sizes and times."""
    if not is_remote(p):
        return os.fspath(p)
    try:
        files = sorted((f for f in path(p).glob("*") if not f.is_dir()), key=lambda f: f.name)
    except FileNotFoundError:
        files = []
    except Exception as e:  # noqa: BLE001
        raise StorageError(f"{p}: cannot be reached ({type(e).__name__}: {_first_line(e)})") from None
    if not files:
        raise StorageError(f"{p}: no such folder (or an empty one)")
    key = hashlib.sha256(f"{p}|{[(f.name, f.stat().length, f.stat().mtime) for f in files]}".encode()).hexdigest()
    folder = cache_dir() / f"{key[:16]}-{path(p).name}"
    folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        local = folder / f.name
        if not local.exists():
            shutil.copyfile(local_copy(f), local)
    return str(folder)
