"""A study: several sweeps sharing their teachers, their laws pooled, one summary of them all.

    from capgap.study import StudyConfig, run_study
    record = run_study(cfg, "runs/study")   # re-run = resume; report_study rebuilds the views

It sits above the sweep, the law and the report (it runs sweeps, fits laws, renders views);
none of them imports it.
"""

from capgap.study.runner import StudyConfig, family_key, report_study, run_study

__all__ = ["StudyConfig", "family_key", "report_study", "run_study"]
