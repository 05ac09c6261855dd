"""Shared fixtures: the real datasets folder (skip when absent) and a hermetic semrec cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support import shared_data_root


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = shared_data_root()
    if not root.is_dir():
        pytest.skip(f"real datasets not found at {root} (set SEMREC_TEST_DATA to the shared/data folder)")
    return root


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
