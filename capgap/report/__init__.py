"""Reports of a sweep: the terminal summary table and ``DIR/report/index.html``."""

from capgap.report.html import build_report
from capgap.report.tables import paired_rows, summary_table

__all__ = ["build_report", "paired_rows", "summary_table"]
