"""Shared fixtures. Tests that need ../shared/data skip with a reason when it is absent."""

from __future__ import annotations

import pytest

from tecore.loaders import find_data_dir


@pytest.fixture(scope="session")
def data_dir():
    d = find_data_dir()
    if d is None:
        pytest.skip("../shared/data is absent (set TELLM_DATA_DIR to the data folder to run this test)")
    return d


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Each test session gets its own path cache so tests never depend on a developer's ~/.cache."""
    monkeypatch.setenv("TELLM_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
