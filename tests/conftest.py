"""Settings shared by the whole suite."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Run the suite on one intra-op torch thread.

    The tests use tiny networks; on a small shared CPU (CI has two cores) OpenMP's worker
    threads spin against each other and a tiny run takes 5-40 s with two threads instead
    of ~1 s with one. The previous setting is restored at the end.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
