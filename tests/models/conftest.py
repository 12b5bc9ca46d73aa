import pytest
import torch


@pytest.fixture
def torch_seed():
    """Torch's global random state seeded for the test and restored after it."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        yield
