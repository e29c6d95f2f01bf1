"""Deprecated module name: :func:`precise_bn` lives in :mod:`groupnorm.nn.precise_bn` (also
``groupnorm.precise_bn``). Importing this module warns with DeprecationWarning; its ``precise_bn`` is the same
function."""
import warnings

from .nn.precise_bn import precise_bn

__all__ = ["precise_bn"]

warnings.warn("the module groupnorm.bn_stats is deprecated; use groupnorm.precise_bn (the function) or the module "
              "groupnorm.nn.precise_bn", DeprecationWarning, stacklevel=2)
