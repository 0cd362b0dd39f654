"""The results layer: what a sweep or study measured, read once, defined once (no torch).

Stages below write rows (the sweep's SQLite store, :mod:`.store`); the law fits from them and
the report renders them. Defined here, once each:

* the row (:class:`CellRow`, the ``cells`` columns; :class:`PartRow` in a study) and its
  reader (:func:`read_rows`);
* baseline pairing and the gain (:mod:`.pairing`);
* the best teacher, its censoring and the seed noise with its floor (:mod:`.optimum`,
  :mod:`.defaults`);
* the H1-H3 verdicts (:mod:`.findings`) and a study's cross-part synthesis (:mod:`.synthesis`);
* what a sweep spent (:mod:`.accounting`).
"""

from capgap.results.defaults import LAW_BOOTSTRAP, LAW_CI, NOISE_FLOOR, PAPER_RATIO, SIGNAL
from capgap.results.findings import findings, hypotheses, law_summary
from capgap.results.pairing import Paired, paired_rows
from capgap.results.rows import COLUMNS, CellRow, PartRow
from capgap.results.store import read_rows
from capgap.results.synthesis import synthesis, tag_rows

__all__ = ["COLUMNS", "LAW_BOOTSTRAP", "LAW_CI", "NOISE_FLOOR", "PAPER_RATIO", "SIGNAL",
           "CellRow", "Paired", "PartRow", "findings", "hypotheses", "law_summary",
           "paired_rows", "read_rows", "synthesis", "tag_rows"]
