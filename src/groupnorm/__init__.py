"""groupnorm: Group Normalization (Wu & He, ECCV 2018) as software.

Layers (``groupnorm.nn``), functions (``groupnorm.functional``), a NumPy float64 oracle
(``groupnorm.reference``), compiled CPU kernels (``groupnorm.kernels``), model surgery and a reproduction
harness for the paper's experiments (``groupnorm.experiments``).
"""
__version__ = "0.1.0"

from . import reference  # noqa: E402,F401  (NumPy only)
from . import functional, nn  # noqa: E402,F401
from .convert import (  # noqa: E402,F401  (model surgery; torch only, no onnx)
    convert_bn_to_gn, convert_conv_to_ws, convert_group_norm, convert_sync_batchnorm, freeze_batch_norm,
    unfreeze_batch_norm)
from .precise_bn import precise_bn  # noqa: E402,F401  (population BN statistics after training)
