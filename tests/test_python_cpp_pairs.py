"""Rules kept in both Python and C++ agree: the plain path's error budget (``groupnorm.plain.ERROR_BUDGET`` and
``kErrorBudget*`` in ``kernels/csrc/gn_ops_plain.h``) and the ``GROUPNORM_DISABLE_KERNELS`` switch
(``groupnorm.kernels.disabled`` and the C++ entry's ``kernels_disabled``)."""
import re
from pathlib import Path

import pytest
import torch

from groupnorm import kernels, plain

CSRC = Path(__file__).resolve().parents[1] / "src" / "groupnorm" / "kernels" / "csrc"
CPP_DTYPES = {"Float32": torch.float32, "BFloat16": torch.bfloat16, "Float16": torch.float16}


def _cpp_error_budget() -> dict:
    text = (CSRC / "gn_ops_plain.h").read_text()
    found = re.findall(r"constexpr double kErrorBudget(\w+) = ([0-9.eE+-]+);", text)
    assert found, "no kErrorBudget* constants in gn_ops_plain.h"
    return {CPP_DTYPES[name]: float(value) for name, value in found}


def test_error_budget_is_the_same_in_python_and_cpp():
    assert _cpp_error_budget() == plain.ERROR_BUDGET


def test_cpp_error_budget_parser_reads_each_constant():
    """The parser above sees all three dtypes (a renamed or reformatted constant fails here, not silently)."""
    assert set(_cpp_error_budget()) == set(CPP_DTYPES.values())


@pytest.mark.skipif(not kernels.is_available(), reason=f"compiled kernels not available: {kernels.load_error()}")
@pytest.mark.parametrize("value", ["1", "true", "TRUE", " yes ", "On", "\ton\n", "0", "", "  ", "no", "off", "false",
                                   "2", "yes please", "1.0", "y"])
def test_disable_switch_reads_the_same_in_python_and_cpp(monkeypatch, value):
    x = torch.randn(2, 4, 3)
    monkeypatch.setenv(kernels.DISABLE_ENV, value)
    assert kernels.kernel_takes(x) is not kernels.disabled()  # kernel_takes asks the C++ entry's predicate
    assert kernels.disabled() is (value.strip().lower() in ("1", "true", "yes", "on"))


@pytest.mark.skipif(not kernels.is_available(), reason=f"compiled kernels not available: {kernels.load_error()}")
def test_disabled_scope_sets_and_restores_the_switch(monkeypatch):
    x = torch.randn(2, 4, 3)
    monkeypatch.setenv(kernels.DISABLE_ENV, "no")
    with kernels.disabled_scope():
        assert kernels.disabled() and not kernels.kernel_takes(x)
        kernels.set_disabled(False)
        assert not kernels.disabled() and kernels.kernel_takes(x)
    import os

    assert os.environ[kernels.DISABLE_ENV] == "no"
    monkeypatch.delenv(kernels.DISABLE_ENV)
    with kernels.disabled_scope(False):
        assert kernels.kernel_takes(x)
    assert kernels.DISABLE_ENV not in os.environ
