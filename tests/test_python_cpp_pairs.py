"""Rules kept in both Python and C++ agree: the plain path's error budget (``groupnorm.plain.ERROR_BUDGET`` and
``kErrorBudget*`` in ``kernels/csrc/gn_ops_plain.h``), the ``GROUPNORM_DISABLE_KERNELS`` switch
(``groupnorm.kernels.disabled`` and the C++ entry's ``kernels_disabled``) and the C API's codes (``gn_api.h``)."""
import os
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
    assert os.environ[kernels.DISABLE_ENV] == "no"
    monkeypatch.delenv(kernels.DISABLE_ENV)
    with kernels.disabled_scope(False):
        assert kernels.kernel_takes(x)
    assert kernels.DISABLE_ENV not in os.environ


def _c_enum(*names) -> dict:
    text = (CSRC / "gn_api.h").read_text()
    found = dict((k, int(v)) for k, v in re.findall(r"\b(GN_[A-Z0-9_]+) = (\d+)", text))
    missing = [n for n in names if n not in found]
    assert not missing, f"gn_api.h lacks {missing}"
    return {n: found[n] for n in names}


def test_c_abi_codes_are_the_same_in_python_and_c():
    """The codes Python passes to the C API: activations (groupnorm.args), layouts (groupnorm.layout), dtypes
    and error codes (groupnorm.kernels._lib)."""
    from groupnorm import args, layout
    from groupnorm.kernels import _lib

    acts = _c_enum("GN_ACT_NONE", "GN_ACT_RELU", "GN_ACT_SILU", "GN_ACT_GELU")
    assert {name: args.ACTIVATION_CODES[a] for name, a in
            zip(acts, (None, "relu", "silu", "gelu"))} == acts
    assert _c_enum("GN_LAYOUT_NCS", "GN_LAYOUT_NSC") == {"GN_LAYOUT_NCS": layout.LAYOUT_NCS,
                                                         "GN_LAYOUT_NSC": layout.LAYOUT_NSC}
    dtypes = _c_enum("GN_F32", "GN_F64", "GN_BF16", "GN_F16")
    assert dtypes == {"GN_F32": _lib.DTYPES[torch.float32], "GN_F64": _lib.DTYPES[torch.float64],
                      "GN_BF16": _lib.DTYPES[torch.bfloat16], "GN_F16": _lib.DTYPES[torch.float16]}
    errors = _c_enum("GN_EINVAL", "GN_ENOMEM")
    assert set(_lib._ERRORS) == set(errors.values())
    assert "memory" in _lib._ERRORS[errors["GN_ENOMEM"]] and "invalid" in _lib._ERRORS[errors["GN_EINVAL"]]
