"""A griffe extension for the API reference (``mkdocs.yml``): the docstrings' reStructuredText math, the
``.. math::`` blocks that torch's docstrings also use, and ``:math:`...``` roles, become the ``$$ ... $$`` and
``$...$`` that ``pymdownx.arithmatex`` marks for KaTeX. Docstrings stay as they are in the source."""
from __future__ import annotations

import re
import textwrap

import griffe

_DIRECTIVE = re.compile(r"^([ \t]*)\.\. math::[ \t]*$")
_ROLE = re.compile(r":math:`([^`]+)`")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def rst_math_to_markdown(text: str) -> str:
    """``text`` with each ``.. math::`` block (the directive, then lines indented deeper, blank lines between)
    as a ``$$`` block at the directive's indentation, and each ``:math:`x``` as ``$x$``."""
    lines, out, i = text.split("\n"), [], 0
    while i < len(lines):
        m = _DIRECTIVE.match(lines[i])
        if not m:
            out.append(_ROLE.sub(r"$\1$", lines[i]))
            i += 1
            continue
        pad, i, body = m.group(1), i + 1, []
        while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > len(pad)):
            body.append(lines[i])
            i += 1
        formula = textwrap.dedent("\n".join(body)).strip("\n").split("\n")
        out += ["", pad + "$$", *(pad + line for line in formula), pad + "$$", ""]
    return "\n".join(out)


class RstMath(griffe.Extension):
    """Converts every object's docstring as it is loaded."""

    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rst_math_to_markdown(obj.docstring.value)
