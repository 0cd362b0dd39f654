"""Model families (GPT-2, GPT-NeoX/Pythia, LLaMA), loading, saving and size counting."""

from capgap.models.params import ParamCount, count_params, count_params_from_config

__all__ = ["ParamCount", "count_params", "count_params_from_config"]
