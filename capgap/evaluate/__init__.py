"""Evaluation: held-out loss / perplexity / bits per byte, and lm-evaluation-harness tasks."""

from capgap.evaluate.heldout import EvalConfig, HeldoutResult, evaluate_text

__all__ = ["EvalConfig", "HeldoutResult", "evaluate_text"]
