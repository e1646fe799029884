"""Shared fixtures: tiny random-weight checkpoints saved in the Hub layout, and bar data."""
from __future__ import annotations

import os

import pytest
import torch

from kronos_quant import KronosPredictor
from kronos_quant.testing import random_walk_bars, save_tiny_pair, tiny_pair

# Two xdist workers on two cores: more intra-op threads than cores makes OpenMP barriers
# spin against each other and slows small ops a hundredfold.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory):
    """(tokenizer_dir, model_dir) of a tiny pair saved as config.json + model.safetensors."""
    return save_tiny_pair(tmp_path_factory.mktemp("tiny"), seed=0)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: intra-op threads only add barrier waits (a hundredfold on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture()
def pair():
    return tiny_pair(0)


@pytest.fixture()
def predictor(pair):
    tok, model = pair
    return KronosPredictor(model, tok, device="cpu", max_context=32)


@pytest.fixture()
def bars():
    return random_walk_bars()
