"""The results layer: what a sweep or study measured, read once, defined once (no torch).

Stages below write rows (the sweep's SQLite store); the law fits from them and the report
renders them. Shared definitions such as the noise floor live in :mod:`.defaults`.
"""

from capgap.results.defaults import LAW_BOOTSTRAP, LAW_CI, NOISE_FLOOR

__all__ = ["LAW_BOOTSTRAP", "LAW_CI", "NOISE_FLOOR"]
