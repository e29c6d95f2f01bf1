"""The API reference's math conversion (docs/griffe_rst_math.py): reStructuredText math in docstrings becomes the
$$ / $ markup that pymdownx.arithmatex hands to KaTeX."""
import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("griffe")
_spec = importlib.util.spec_from_file_location("griffe_rst_math", Path(__file__).resolve().parents[1] / "docs" / "griffe_rst_math.py")
rst_math = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rst_math)


def test_math_block_becomes_a_dollar_block_at_its_indentation():
    text = "Summary.\n\n.. math::\n\n    y = \\frac{x - \\mu}{\\sigma}\n    + \\beta\n\nwhere mu is the mean.\n"
    assert rst_math.rst_math_to_markdown(text) == (
        "Summary.\n\n\n$$\ny = \\frac{x - \\mu}{\\sigma}\n+ \\beta\n$$\n\nwhere mu is the mean.\n")
    nested = "Args:\n    x: input\n\n    .. math::\n        a^2\n    more text"
    assert rst_math.rst_math_to_markdown(nested) == "Args:\n    x: input\n\n\n    $$\n    a^2\n    $$\n\n    more text"


def test_math_role_becomes_inline_dollars_and_other_text_is_unchanged():
    assert rst_math.rst_math_to_markdown("the mean :math:`\\mu` of x") == "the mean $\\mu$ of x"
    plain = "no math here\n\n    code block\n.. note:: kept"
    assert rst_math.rst_math_to_markdown(plain) == plain
