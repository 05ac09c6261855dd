"""Atomic file writing and checksums shared by every artifact writer."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from semrec.errors import SemrecError


def _new_temporary(path: Path) -> Path:
    """Create an empty, unique ``.<name>.<random>.tmp`` next to ``path``, with the mode an ordinary new file gets
    (0666 less the process umask; ``tempfile.mkstemp`` would make it 0600, and the rename would keep that)."""
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"cannot create a temporary file next to {path}")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it over ``path`` only if the block succeeds.

    The file is created like an ordinary one (mode 0666 less the umask), so artifacts are as readable by other
    accounts as the umask allows. Writers may replace the temporary file (the rename takes whatever is there)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = _new_temporary(path)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False) + "\n", encoding="utf-8")


def read_json(path: str | Path) -> Any:
    """Parse a JSON file. Raises SemrecError naming the file when it is missing or not valid JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SemrecError(f"{path}: not found") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise SemrecError(f"{path}: not valid JSON ({exc})") from None


def require_artifact(path: str | Path, folder_kind: str, fix: str) -> Path:
    """``path`` if it is a file, else SemrecError ``"<path>: missing (incomplete <folder_kind> folder); <fix>"``."""
    path = Path(path)
    if not path.is_file():
        raise SemrecError(f"{path}: missing (incomplete {folder_kind} folder); {fix}")
    return path


def write_npy(path: str | Path, array: np.ndarray) -> None:
    """Save a numpy array atomically (``np.save`` on a temporary file, then rename)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array)


def cache_root() -> Path:
    """semrec's cache folder: ``$SEMREC_CACHE`` or ``~/.cache/semrec``."""
    return Path(os.environ.get("SEMREC_CACHE", Path.home() / ".cache" / "semrec"))


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_text(*parts: str) -> str:
    """Hash a sequence of strings unambiguously (each part is length-prefixed)."""
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode("utf-8")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()
