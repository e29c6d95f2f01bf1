import os

import pytest
import torch

# Two cores are shared by everything on this machine: keep torch from oversubscribing them.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(params=["dispatch", "plain"])
def gn_path(request, monkeypatch):
    """Run a test through the default dispatch (compiled kernels where they apply) and through the plain path."""
    if request.param == "plain":
        monkeypatch.setenv("GROUPNORM_DISABLE_KERNELS", "1")
    else:
        monkeypatch.delenv("GROUPNORM_DISABLE_KERNELS", raising=False)
    return request.param
