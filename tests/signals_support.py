"""Fixtures shared by the tests/test_signals_*.py files (imported by name where used)."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Run a module's tiny models on one intra-op thread, then restore the setting.

    On a shared 2-core machine extra OpenMP threads only spin against each other on the tiny
    matrices these tests use, which can slow them down many times over.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
