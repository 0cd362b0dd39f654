"""The MiniMA recipe at LLM scale: student shapes now (``shapes``); the rest comes later."""

from capgap.recipe.shapes import Shape, minima_shape, reshape_config

__all__ = ["Shape", "minima_shape", "reshape_config"]
