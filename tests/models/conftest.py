import pytest
import torch


@pytest.fixture
def one_thread():
    """torch at 1 thread for the test (torchsparse's CPU kernels gain nothing from more here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
