"""The report: ``OUT/report.md`` and its plots from the results rows.

:mod:`.rows` (which rows are which: kinds, roles, settings), :mod:`.stats` (intervals, paired differences,
convergence), :mod:`.tables` (the paper's tables and the report's sections), :mod:`.bn` (the
sections of the experiments on BN's mechanism), :mod:`.claims` (the verdicts), :mod:`.plots` (the figures, one
map), :mod:`.diagnostics` (a stand-alone measurement).
"""
from .tables import build_report, write_report

__all__ = ["build_report", "write_report"]
