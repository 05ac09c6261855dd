"""Shared fixtures: the real datasets folder (skip when absent) and a hermetic semrec cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_root() -> Path:
    return Path(os.environ.get("SEMREC_TEST_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = shared_data_root()
    if not root.is_dir():
        pytest.skip(f"real datasets not found at {root} (set SEMREC_TEST_DATA to the shared/data folder)")
    return root


def real_dataset(shared: Path, folder: str) -> Path:
    path = shared / folder
    if not path.is_dir():
        pytest.skip(f"{path} not present")
    return path


@pytest.fixture(scope="session", autouse=True)
def semrec_cache(tmp_path_factory) -> Path:
    """Point SEMREC_CACHE at a per-session folder so tests never read a developer's cache."""
    cache = tmp_path_factory.mktemp("semrec_cache")
    old = os.environ.get("SEMREC_CACHE")
    os.environ["SEMREC_CACHE"] = str(cache)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    yield cache
    if old is None:
        os.environ.pop("SEMREC_CACHE", None)
    else:
        os.environ["SEMREC_CACHE"] = old
