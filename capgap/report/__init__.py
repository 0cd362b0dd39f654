"""Reports of a sweep: the terminal summary table and ``DIR/report/index.html``; a study's
views. The report renders what :mod:`capgap.results` computed and :mod:`capgap.law` fitted."""

from capgap.report.html import build_report
from capgap.report.tables import summary_table

__all__ = ["build_report", "summary_table"]
