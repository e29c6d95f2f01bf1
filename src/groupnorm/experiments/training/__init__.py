"""Training one run: the step loop (:mod:`.loop`), the run's model (:mod:`.model`), the schedule and optimizer
(:mod:`.schedule`), evaluation (:mod:`.evaluate`), BN's evaluation with other statistics (:mod:`.bn_eval`),
Figure 3's probe (:mod:`.probe`), the results row (:mod:`.row`) and the device (:mod:`.devices`)."""
from .evaluate import evaluate, memory_format, memory_format_name, to_device
from .loop import TrainJob, train_one_epoch, train_run
from .model import build_run_model
from .schedule import lr_at, make_optimizer

__all__ = ["evaluate", "memory_format", "memory_format_name", "to_device", "TrainJob", "train_one_epoch",
           "train_run", "build_run_model", "lr_at", "make_optimizer"]
