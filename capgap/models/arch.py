"""Which Hugging Face architectures capgap handles, and building models from configs.

Pruning and distillation need to know a model's module layout (where the heads, the FFN
neurons and the norms live). capgap knows three layouts, :data:`SUPPORTED_ARCHS`:

* ``gpt2``     — ``GPT2LMHeadModel``: fused ``c_attn`` (Conv1D), learned positions, LayerNorm.
* ``gpt_neox`` — ``GPTNeoXForCausalLM`` (Pythia): fused ``query_key_value``, partial rotary,
  parallel residual, LayerNorm, untied ``embed_out``.
* ``llama``    — ``LlamaForCausalLM`` and the *llama-like* ``MistralForCausalLM`` and
  ``Qwen2ForCausalLM``: separate q/k/v/o, GQA, SwiGLU, RMSNorm. They share LLaMA's module
  names and shapes; what differs is described by :class:`ArchInfo` flags (Qwen2 has q/k/v
  biases, Mistral may have a sliding window). The model keeps its own class and config, so
  those differences survive a prune → save → load round trip.

Every model capgap builds uses :data:`ATTN_IMPLEMENTATION`.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import AutoModelForCausalLM, PretrainedConfig, PreTrainedModel

from capgap.errors import CapgapError

SUPPORTED_ARCHS: tuple[str, ...] = ("gpt2", "gpt_neox", "llama")
# model_type -> capgap arch key. The llama-like types share LLaMA's layout.
_ARCH_OF_MODEL_TYPE: dict[str, str] = {
    "gpt2": "gpt2",
    "gpt_neox": "gpt_neox",
    "llama": "llama",
    "mistral": "llama",
    "qwen2": "llama",
}
LLAMA_LIKE: tuple[str, ...] = ("llama", "mistral", "qwen2")

# "sdpa": PyTorch's fused attention. On CPU it is deterministic run to run (checked in
# tests/models/test_arch.py) and agrees with "eager" to float tolerance, and it is what
# users get on GPU by default. Eager would only be needed for attention weights output.
ATTN_IMPLEMENTATION = "sdpa"


@dataclass(frozen=True)
class ArchInfo:
    """A config's capgap layout plus the flags pruning code must respect.

    ``sliding_window`` is the window of a Mistral model (same in every layer) or ``None``.
    ``layer_types`` configs (Qwen2 always has the list) must have it trimmed together with
    ``num_hidden_layers`` when layers are dropped.
    """

    arch: str  # one of SUPPORTED_ARCHS
    model_type: str  # config.model_type, e.g. "qwen2"
    qkv_bias: bool  # q/k/v projections have a bias (Qwen2; LLaMA with attention_bias)
    o_bias: bool  # attention output projection has a bias
    mlp_bias: bool  # FFN projections have biases
    sliding_window: int | None = None


def arch_of_model_type(model_type: str | None) -> str:
    """The capgap arch key of a config's ``model_type``; CapgapError if unsupported."""
    arch = _ARCH_OF_MODEL_TYPE.get(model_type or "")
    if arch is None:
        raise CapgapError(
            f"unsupported architecture '{model_type}'; supported: gpt2, gpt_neox, "
            "llama (and llama-like mistral, qwen2)"
        )
    return arch


def arch_info(config: PretrainedConfig) -> ArchInfo:
    """Describe ``config``'s layout; CapgapError for anything capgap cannot prune or distill."""
    model_type = getattr(config, "model_type", None)
    arch = arch_of_model_type(model_type)
    if arch == "gpt2":
        return ArchInfo(arch, model_type, qkv_bias=True, o_bias=True, mlp_bias=True)
    if arch == "gpt_neox":
        bias = bool(getattr(config, "attention_bias", True))
        return ArchInfo(arch, model_type, qkv_bias=bias, o_bias=bias, mlp_bias=True)
    return _llama_like_info(config, model_type)


def _llama_like_info(config: PretrainedConfig, model_type: str) -> ArchInfo:
    mlp_bias = bool(getattr(config, "mlp_bias", False))
    if model_type == "llama":
        bias = bool(getattr(config, "attention_bias", False))
        return ArchInfo("llama", model_type, qkv_bias=bias, o_bias=bias, mlp_bias=mlp_bias)
    if model_type == "qwen2":
        # Trap: with use_sliding_window, Qwen2 picks each layer's attention by `layer_types`
        # (layers >= max_window_layers slide). Layers are then not interchangeable (dropping
        # one shifts which layers slide), so refuse rather than prune them as LLaMA layers.
        if "sliding_attention" in (getattr(config, "layer_types", None) or []):
            raise CapgapError(
                "qwen2 config has sliding-window layers (use_sliding_window=true); "
                "capgap supports qwen2 only with full attention in every layer"
            )
        # Qwen2Attention hard-codes bias=True on q/k/v and bias=False on o_proj.
        return ArchInfo("llama", model_type, qkv_bias=True, o_bias=False, mlp_bias=False)
    # mistral: LLaMA layout without biases; one window for all layers, kept in the config.
    window = getattr(config, "sliding_window", None)
    return ArchInfo(
        "llama", model_type, qkv_bias=False, o_bias=False, mlp_bias=False, sliding_window=window
    )


def arch_of(config: PretrainedConfig) -> str:
    """The capgap arch key (one of :data:`SUPPORTED_ARCHS`) of ``config``."""
    return arch_info(config).arch


def build_model(config: PretrainedConfig) -> PreTrainedModel:
    """A randomly initialised standard transformers causal LM for ``config``.

    Initialisation follows transformers (normal(0, initializer_range)); seed with
    ``torch.manual_seed`` first for reproducibility.
    """
    arch_info(config)
    return AutoModelForCausalLM.from_config(config, attn_implementation=ATTN_IMPLEMENTATION)
