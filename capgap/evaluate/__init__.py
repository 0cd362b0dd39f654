"""Evaluation: held-out loss / perplexity / bits per byte, and lm-evaluation-harness tasks."""

from capgap.evaluate.heldout import HeldoutResult, evaluate_text

__all__ = ["HeldoutResult", "evaluate_text"]
