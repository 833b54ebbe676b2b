import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """spconv CPU is only correct at one thread; our tests stay light on the shared cores too."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)
