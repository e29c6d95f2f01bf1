"""Deprecated: training one run moved to :mod:`groupnorm.experiments.training` (``build_model`` is
:func:`~groupnorm.experiments.training.build_run_model` there)."""
import warnings

from .training import *  # noqa: F401,F403
from .training import __all__, build_run_model as build_model  # noqa: F401

warnings.warn("groupnorm.experiments.train is deprecated; import from groupnorm.experiments.training",
              DeprecationWarning, stacklevel=2)
