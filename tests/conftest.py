from __future__ import annotations

import os
import tempfile

import pytest

pytest_plugins = ["tests.postgres"]

# Tests never write to the user's cache: pretrained checkpoints go to one temporary dir.
os.environ.setdefault("SEARCH_CACHE", tempfile.mkdtemp(prefix="search-cache-"))


@pytest.fixture(autouse=True)
def _torch_threads() -> None:
    """Keep each test on the same thread count, whatever a previous test set."""
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(max(1, os.cpu_count() or 1))


@pytest.fixture
def one_thread(_torch_threads: None) -> None:
    """One torch thread for this test (after ``_torch_threads`` reset the count)."""
    from tests.faultmodels import one_thread

    one_thread()
