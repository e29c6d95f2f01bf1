"""The report: tables, statistics, verdicts and plots from the results rows."""
from .tables import build_report, write_report  # noqa: F401
