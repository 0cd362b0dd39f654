"""capgap: the law of capacity gap in language-model distillation, as a toolkit.

Pipeline (one subpackage each): data -> models -> prune -> distill -> evaluate -> sweep -> law -> report.
"""

__version__ = "0.1.0"
