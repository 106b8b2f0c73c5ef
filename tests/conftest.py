"""Fixtures shared by several test files."""

import sys
from pathlib import Path

import pytest
import torch

# the build scripts (scripts/webdriver.py drives headless Chromium for the slides build and the browser tests)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))


@pytest.fixture
def one_thread():
    """One torch thread: tiny models run fastest so, and bitwise comparisons need one thread count
    everywhere (float sums depend on how the work is split)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
