"""Fixtures shared by several test files."""

import pytest
import torch


@pytest.fixture
def one_thread():
    """One torch thread: tiny models run fastest so, and bitwise comparisons need one thread count
    everywhere (float sums depend on how the work is split)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
