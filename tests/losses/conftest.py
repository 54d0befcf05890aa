"""Loss-test settings: the inputs are tiny, so each test runs with one intra-op thread (OpenMP
hand-offs cost tens of ms per op when the 2 cores are shared with other jobs); the previous
thread count is restored afterwards, so tests elsewhere are unaffected."""
import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
