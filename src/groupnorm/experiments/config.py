"""Deprecated: the run config, presets and experiments moved to :mod:`groupnorm.experiments.protocol`."""
import warnings

from .protocol import *  # noqa: F401,F403
from .protocol import __all__  # noqa: F401

warnings.warn("groupnorm.experiments.config is deprecated; import from groupnorm.experiments.protocol",
              DeprecationWarning, stacklevel=2)
