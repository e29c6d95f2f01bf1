"""Where a run trains (``--device``), with which autocast (``--amp``), and the process group's backend.

- ``--device auto`` (default): ``cuda`` when ``torch.cuda.is_available()``, else ``cpu``. Under ``torchrun``
  each rank of a CUDA run takes ``cuda:LOCAL_RANK`` (one GPU per rank), and the process group's backend is
  ``nccl`` on CUDA and ``gloo`` on CPU.
- ``--amp bf16``: the forward pass and the loss under ``torch.autocast(device.type, torch.bfloat16)``
  (convolutions and the linear layer in bfloat16, the loss in float32; parameters, gradients and the optimizer
  stay float32; bfloat16 needs no loss scaling). ``none`` (default): float32 throughout. On CPUs with AVX512-BF16
  or AMX (e.g. Sapphire Rapids) bf16 convolutions are faster; elsewhere it may be slower.

- CPU convolutions over at most ``SMALL_CONV_BATCH`` = 4 images per call skip oneDNN (``conv_context``): at such
  batches its fixed cost per call dominates, and torch's own convolution (im2col and a matrix product) trains
  1.1-1.7x faster (the per-step figures are in docs/results/README.md). The choice depends only on the batch, so
  a resumed run makes the same one.

The training code takes the device as a value: the CPU and CUDA paths are the same code. The device and the AMP
mode are how a run is executed, not part of its identity (as the thread count and the memory format are): they
are recorded in its row.
"""
from __future__ import annotations

import contextlib
import os

import torch

from groupnorm.hostinfo import cpu_model

DEVICES = ("auto", "cpu", "cuda")
AMP_MODES = ("none", "bf16")


def resolve_device(name: str = "auto", local_rank: int | None = None) -> torch.device:
    """The torch.device of ``name`` for this process (``local_rank``: this torchrun rank's GPU on its node)."""
    if name not in DEVICES:
        raise ValueError(f"device={name!r} must be one of {', '.join(DEVICES)}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("device='cuda' but torch.cuda.is_available() is False (this torch "
                           f"{torch.__version__} has no usable CUDA device); use --device cpu or auto")
    index = 0 if local_rank is None else local_rank
    count = torch.cuda.device_count()
    if index >= count:
        raise RuntimeError(f"LOCAL_RANK={index} but this machine has {count} CUDA device(s): start at most "
                           f"{count} ranks per node")
    return torch.device("cuda", index)


def local_rank() -> int | None:
    """This torchrun rank's index on its node (``$LOCAL_RANK``), None outside torchrun."""
    v = os.environ.get("LOCAL_RANK")
    return int(v) if v is not None else None


def bind(device: torch.device) -> None:
    """Make ``device`` this process's current CUDA device (what nccl and pinned memory use); nothing on CPU."""
    if device.type == "cuda":
        torch.cuda.set_device(device)


def backend_for(device: torch.device) -> str:
    """The process group's backend: ``nccl`` for CUDA tensors, ``gloo`` for CPU ones."""
    return "nccl" if device.type == "cuda" else "gloo"


def check_amp(amp: str) -> str:
    if amp not in AMP_MODES:
        raise ValueError(f"amp={amp!r} must be one of {', '.join(AMP_MODES)}")
    return amp


def autocast(device: torch.device, amp: str):
    """The autocast context of ``amp`` on ``device`` (a no-op context for ``none``)."""
    if check_amp(amp) == "none":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


SMALL_CONV_BATCH = 4


def conv_backend(device: torch.device, batch: int) -> str:
    """Which convolution code a forward and backward over ``batch`` images on ``device`` uses: ``"native"``
    (oneDNN off) on CPU for at most ``SMALL_CONV_BATCH`` images, else ``"default"`` (torch's choice: oneDNN on
    CPU, cuDNN on CUDA). Recorded in each row as ``conv_backend`` (of the training step)."""
    return "native" if device.type == "cpu" and batch <= SMALL_CONV_BATCH else "default"


def conv_context(device: torch.device, batch: int):
    """The context for a forward (and its backward) over ``batch`` images: oneDNN off where
    :func:`conv_backend` says ``"native"``, else a no-op."""
    if conv_backend(device, batch) == "native":
        return _onednn_off()
    return contextlib.nullcontext()


@contextlib.contextmanager
def _onednn_off():
    """oneDNN off for the block, its previous setting restored after (the other oneDNN flags untouched)."""
    was = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = was


def device_name(device: torch.device) -> str:
    """A human name of the hardware: the GPU's name, or the CPU model (from /proc/cpuinfo where there is one)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model()
