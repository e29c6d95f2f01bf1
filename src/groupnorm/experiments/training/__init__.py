"""Training one run: the step loop, evaluation, BN's evaluation, checkpoints and the device."""
from .train import TrainJob, build_model, evaluate, lr_at, memory_format_name, to_device, train_run  # noqa: F401
