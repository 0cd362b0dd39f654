"""The capacity-gap law: from a teacher × student sweep to T* = a·S + b, and back to advice.

numpy/scipy only (matplotlib inside :func:`plot_law`); never torch. The law.json schema and
the statistical choices are described in ``capgap/law/README.md``.

    >>> law = fit_source("runs/sweep", where={"objective": "soft_ce"})   # doctest: +SKIP
    >>> predict(law, 3e9, teachers=[1.3e9, 6.7e9, 13e9]).closest_teacher  # doctest: +SKIP
"""

from capgap.law.budget import BudgetLaw, fit_budget_law
from capgap.law.cells import (
    Cell,
    Point,
    Selection,
    group_by_size,
    load_cells,
    load_points,
    select_cells,
)
from capgap.law.law import fit_law, fit_points, fit_source
from capgap.law.plot import plot_law
from capgap.law.predict import (
    RangeRecommendation,
    Recommendation,
    load_law,
    predict,
    predict_range,
    rank_teachers,
)
from capgap.units import format_size, parse_size, parse_sizes

__all__ = [
    "BudgetLaw",
    "fit_budget_law",
    "Cell",
    "Point",
    "RangeRecommendation",
    "Recommendation",
    "Selection",
    "fit_law",
    "fit_points",
    "fit_source",
    "format_size",
    "group_by_size",
    "load_cells",
    "load_law",
    "load_points",
    "parse_size",
    "parse_sizes",
    "plot_law",
    "predict",
    "predict_range",
    "rank_teachers",
    "select_cells",
]
