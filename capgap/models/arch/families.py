"""The registry: one :class:`~capgap.models.arch.layout.Adapter` per supported family.

Every stage asks :func:`adapter_for` (pruning, shape planning, parameter and FLOP counts,
loading); docs/models.md's supported-architecture table is generated from :data:`FAMILIES`.
Traps each family sets for width and depth pruning are written where they are handled:

* GPT-2 uses ``Conv1D`` whose weight is ``[in, out]`` (transposed w.r.t. ``nn.Linear``), so
  its tables list the input axis first; its ``split_size`` and, with
  ``scale_attn_by_inverse_layer_idx``, its per-layer score scale are fixed at construction
  (:meth:`Adapter.fix_attention` resets them; the scale is folded into the query weights).
* GPT-NeoX interleaves q, k, v per head in ``query_key_value`` (``qkv_int``).
* Qwen3 and Gemma 3 normalise q and k per head over ``head_dim``: untouched by pruning.
* OLMo 2 normalises q and k over the *whole* projection (heads x head_dim): the norm weight
  is sliced with the heads and, while heads are masked, its statistic covers kept heads only.
* Gemma 2/3 and OLMo 2 are post-norm: the residual write is a norm's output.
* Gemma scales embeddings by sqrt(hidden) and its RMSNorm by (1 + weight); pruning the
  hidden width rescales the embedding to keep the product (:mod:`capgap.models.pruned.shrink`).
* Phi-3 fuses q/k/v (``qkv_cat`` with GQA) and gate/up (``ffn2``), and splits the fused
  output by the config's head count in forward, so each attention gets its own config.
* Sliding-window/global layer patterns (``layer_types``) keep each kept layer's own type.
"""

from __future__ import annotations

from types import MappingProxyType

from torch import nn
from transformers import PretrainedConfig

from capgap.errors import CapgapError
from capgap.models.arch.layout import Adapter, Geometry

# model_types people ask for that capgap cannot prune, and what is missing.
_REFUSED = {
    "mixtral": "mixture-of-experts FFNs (expert pruning is not implemented)",
    "qwen2_moe": "mixture-of-experts FFNs (expert pruning is not implemented)",
    "qwen3_moe": "mixture-of-experts FFNs (expert pruning is not implemented)",
    "olmoe": "mixture-of-experts FFNs (expert pruning is not implemented)",
    "gemma3": "the multimodal Gemma 3 wrapper; load its text model (model_type gemma3_text)",
    "gemma": "Gemma 1 (only Gemma 2 and Gemma 3 text are registered)",
}


def _gpt2_geometry(c: PretrainedConfig) -> Geometry:
    inner = c.n_inner if c.n_inner is not None else 4 * c.n_embd
    return Geometry(c.n_layer, c.n_embd, c.n_head, c.n_head, c.n_embd // c.n_head, inner)


def _neox_geometry(c: PretrainedConfig) -> Geometry:
    hd = c.hidden_size // c.num_attention_heads
    h = c.num_attention_heads
    return Geometry(c.num_hidden_layers, c.hidden_size, h, h, hd, c.intermediate_size)


def _llama_geometry(c: PretrainedConfig) -> Geometry:
    h = c.num_attention_heads
    kv = getattr(c, "num_key_value_heads", None) or h
    hd = getattr(c, "head_dim", None) or c.hidden_size // h
    return Geometry(c.num_hidden_layers, c.hidden_size, h, kv, hd, c.intermediate_size)


def _gpt2_updates(geo: Geometry, d: int, g: int, f: int, n: int) -> dict:
    return {"n_embd": d, "n_head": g, "n_inner": f, "n_layer": n}


def _neox_updates(geo: Geometry, d: int, g: int, f: int, n: int) -> dict:
    return {"hidden_size": d, "num_attention_heads": g, "intermediate_size": f, "num_hidden_layers": n}


def _llama_updates(geo: Geometry, d: int, g: int, f: int, n: int) -> dict:
    return {
        "hidden_size": d,
        "num_attention_heads": g * geo.group_size,
        "num_key_value_heads": g,
        "head_dim": geo.head_dim,  # explicit: hidden / heads no longer equals it
        "intermediate_size": f,
        "num_hidden_layers": n,
    }


GPT2 = Adapter(
    name="gpt2",
    title="GPT-2",
    layers="transformer.h",
    attn="attn",
    mlp="mlp",
    attn_out="attn.c_proj",
    mlp_out="mlp.c_proj",
    norms=("ln_1", "ln_2"),
    final_norm="transformer.ln_f",
    embeddings=("transformer.wte", "transformer.wpe"),
    lm_head="lm_head",
    norm_kind="layernorm",
    eps_key="layer_norm_epsilon",
    layer_params={
        # Conv1D: weight is [in, out]
        "attn.c_attn.weight": ("h_in", "qkv_cat"),
        "attn.c_attn.bias": ("qkv_cat",),
        "attn.c_proj.weight": ("q", "h_out"),
        "attn.c_proj.bias": ("h_out",),
        "mlp.c_fc.weight": ("h_in", "ffn"),
        "mlp.c_fc.bias": ("ffn",),
        "mlp.c_proj.weight": ("ffn", "h_out"),
        "mlp.c_proj.bias": ("h_out",),
        "ln_1.weight": ("h_norm_w",),
        "ln_1.bias": ("h_norm_b",),
        "ln_2.weight": ("h_norm_w",),
        "ln_2.bias": ("h_norm_b",),
    },
    top_params={
        "transformer.wte.weight": (None, "h_out"),
        "transformer.wpe.weight": (None, "h_out"),
        "transformer.ln_f.weight": ("h_norm_w",),
        "transformer.ln_f.bias": ("h_norm_b",),
        "lm_head.weight": (None, "h_in"),
    },
    geometry_of=_gpt2_geometry,
    config_updates=_gpt2_updates,
    shape_rule="hidden = heads x head_dim (GPT-2 derives head_dim = hidden / heads)",
    hidden_tied_to_heads=True,
    gated=False,
    model_types=("gpt2",),
)

GPT_NEOX = Adapter(
    name="gpt_neox",
    title="GPT-NeoX / Pythia",
    layers="gpt_neox.layers",
    attn="attention",
    mlp="mlp",
    attn_out="attention.dense",
    mlp_out="mlp.dense_4h_to_h",
    norms=("input_layernorm", "post_attention_layernorm"),
    final_norm="gpt_neox.final_layer_norm",
    embeddings=("gpt_neox.embed_in",),
    lm_head="lm_head",
    norm_kind="layernorm",
    eps_key="layer_norm_eps",
    layer_params={
        "attention.query_key_value.weight": ("qkv_int", "h_in"),
        "attention.query_key_value.bias": ("qkv_int",),
        "attention.dense.weight": ("h_out", "q"),
        "attention.dense.bias": ("h_out",),
        "mlp.dense_h_to_4h.weight": ("ffn", "h_in"),
        "mlp.dense_h_to_4h.bias": ("ffn",),
        "mlp.dense_4h_to_h.weight": ("h_out", "ffn"),
        "mlp.dense_4h_to_h.bias": ("h_out",),
        "input_layernorm.weight": ("h_norm_w",),
        "input_layernorm.bias": ("h_norm_b",),
        "post_attention_layernorm.weight": ("h_norm_w",),
        "post_attention_layernorm.bias": ("h_norm_b",),
    },
    top_params={
        "gpt_neox.embed_in.weight": (None, "h_out"),
        "gpt_neox.final_layer_norm.weight": ("h_norm_w",),
        "gpt_neox.final_layer_norm.bias": ("h_norm_b",),
        "lm_head.weight": (None, "h_in"),
    },
    geometry_of=_neox_geometry,
    config_updates=_neox_updates,
    shape_rule="hidden = heads x head_dim (GPT-NeoX derives head_size = hidden / heads)",
    hidden_tied_to_heads=True,
    gated=False,
    model_types=("gpt_neox",),
)

_LLAMA_ATTN = {
    "self_attn.q_proj.weight": ("q", "h_in"),
    "self_attn.q_proj.bias": ("q",),
    "self_attn.k_proj.weight": ("kv", "h_in"),
    "self_attn.k_proj.bias": ("kv",),
    "self_attn.v_proj.weight": ("kv", "h_in"),
    "self_attn.v_proj.bias": ("kv",),
    "self_attn.o_proj.weight": ("h_out", "q"),
    "self_attn.o_proj.bias": ("h_out",),
}
_GATED_MLP = {
    "mlp.gate_proj.weight": ("ffn", "h_in"),
    "mlp.gate_proj.bias": ("ffn",),
    "mlp.up_proj.weight": ("ffn", "h_in"),
    "mlp.up_proj.bias": ("ffn",),
    "mlp.down_proj.weight": ("h_out", "ffn"),
    "mlp.down_proj.bias": ("h_out",),
}
_PRE_NORMS = ("input_layernorm", "post_attention_layernorm")
_TOP = {
    "model.embed_tokens.weight": (None, "h_out"),
    "model.norm.weight": ("h_norm_w",),
    "lm_head.weight": (None, "h_in"),
}
_LLAMA_LIKE = {
    "layers": "model.layers",
    "attn": "self_attn",
    "mlp": "mlp",
    "attn_out": "self_attn.o_proj",
    "mlp_out": "mlp.down_proj",
    "final_norm": "model.norm",
    "embeddings": ("model.embed_tokens",),
    "lm_head": "lm_head",
    "norm_kind": "rmsnorm",
    "eps_key": "rms_norm_eps",
    "top_params": _TOP,
    "geometry_of": _llama_geometry,
    "config_updates": _llama_updates,
    "shape_rule": "hidden % heads == 0 (config validation; head_dim is explicit)",
    "hidden_tied_to_heads": False,
    "gated": True,
}


def _norms(*names: str) -> dict[str, tuple[str]]:
    return {f"{n}.weight": ("h_norm_w",) for n in names}


LLAMA = Adapter(
    name="llama",
    title="Llama 2/3.x, Mistral, Qwen2/2.5",
    norms=_PRE_NORMS,
    layer_params=_LLAMA_ATTN | _GATED_MLP | _norms(*_PRE_NORMS),
    model_types=("llama", "mistral", "qwen2"),
    notes="Llama 3 rope_scaling kept; sliding-window layers keep their type",
    **_LLAMA_LIKE,
)

_QK_HEAD_NORMS = {"self_attn.q_norm.weight": (None,), "self_attn.k_norm.weight": (None,)}

QWEN3 = Adapter(
    name="qwen3",
    title="Qwen3 (dense)",
    norms=_PRE_NORMS,
    layer_params=_LLAMA_ATTN | _QK_HEAD_NORMS | _GATED_MLP | _norms(*_PRE_NORMS),
    attn_norms_share_eps=True,
    model_types=("qwen3",),
    notes="q/k RMSNorm per head over head_dim; MoE (qwen3_moe) refused",
    **_LLAMA_LIKE,
)

_GEMMA_NORMS = ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                "post_feedforward_layernorm")
_GEMMA = _LLAMA_LIKE | {
    "norms": _GEMMA_NORMS,
    "attn_write": "post_attention_layernorm",
    "mlp_write": "post_feedforward_layernorm",
    "norm_offset": 1.0,
    "embed_scaled": True,
}

GEMMA2 = Adapter(
    name="gemma2",
    title="Gemma 2",
    layer_params=_LLAMA_ATTN | _GATED_MLP | _norms(*_GEMMA_NORMS),
    model_types=("gemma2",),
    attn_implementation="eager",  # transformers refuses sdpa with attention soft-capping
    notes="logit soft-capping kept (eager attention); sliding/global pattern follows kept layers",
    **_GEMMA,
)

GEMMA3 = Adapter(
    name="gemma3_text",
    title="Gemma 3 (text)",
    layer_params=_LLAMA_ATTN | _QK_HEAD_NORMS | _GATED_MLP | _norms(*_GEMMA_NORMS),
    attn_norms_share_eps=True,
    model_types=("gemma3_text",),
    notes="q/k norms per head; sliding/global pattern follows kept layers; multimodal gemma3 refused",
    **_GEMMA,
)

_OLMO2_NORMS = ("post_attention_layernorm", "post_feedforward_layernorm")
OLMO2 = Adapter(
    name="olmo2",
    title="OLMo 2",
    norms=_OLMO2_NORMS,
    layer_params=_LLAMA_ATTN | {"self_attn.q_norm.weight": ("q",), "self_attn.k_norm.weight": ("kv",)}
    | _GATED_MLP | _norms(*_OLMO2_NORMS),
    attn_write="post_attention_layernorm",
    mlp_write="post_feedforward_layernorm",
    head_norms=MappingProxyType({"self_attn.q_norm": "q", "self_attn.k_norm": "kv"}),
    attn_norms_share_eps=True,
    model_types=("olmo2",),
    notes="q/k RMSNorm over heads x head_dim, sliced with the heads",
    **_LLAMA_LIKE,
)

PHI3 = Adapter(
    name="phi3",
    title="Phi-3 / Phi-3.5 / Phi-4-mini",
    norms=_PRE_NORMS,
    layer_params={
        "self_attn.qkv_proj.weight": ("qkv_cat", "h_in"),
        "self_attn.o_proj.weight": ("h_out", "q"),
        "mlp.gate_up_proj.weight": ("ffn2", "h_in"),
        "mlp.down_proj.weight": ("h_out", "ffn"),
    } | _norms(*_PRE_NORMS),
    config_per_layer=("num_attention_heads", "num_key_value_heads"),
    model_types=("phi3",),
    notes="fused qkv_proj and gate_up_proj sliced per part",
    **_LLAMA_LIKE,
)

FAMILIES: tuple[Adapter, ...] = (GPT2, GPT_NEOX, LLAMA, QWEN3, GEMMA2, GEMMA3, PHI3, OLMO2)
ADAPTERS: dict[str, Adapter] = {t: a for a in FAMILIES for t in a.model_types}
SUPPORTED = ", ".join(ADAPTERS)


def adapter_for(model_or_config: nn.Module | PretrainedConfig) -> Adapter:
    """The adapter of a model or config; CapgapError naming what is missing otherwise."""
    config = getattr(model_or_config, "config", model_or_config)
    return adapter_for_type(getattr(config, "model_type", None) or type(model_or_config).__name__)


def adapter_for_type(model_type: str) -> Adapter:
    """The adapter of a config's ``model_type`` (read before any weights are)."""
    adapter = ADAPTERS.get(model_type)
    if adapter is None:
        why = _REFUSED.get(model_type)
        if why:
            raise CapgapError(f"unsupported architecture '{model_type}': {why}; supported: {SUPPORTED}")
        raise CapgapError(f"unsupported architecture '{model_type}'; supported: {SUPPORTED}")
    return adapter


def supported_table() -> str:
    """The supported-architecture table of docs/models.md (Markdown), generated from :data:`FAMILIES`.

    Every family prunes by width (heads in whole KV groups, neurons, hidden) and depth,
    distills and evaluates; the columns say what differs: the vanilla-config rule of uniform
    students and how per-layer (global) students export."""
    rows = ["| family | model_type | uniform students (vanilla HF) | global students | notes |",
            "|---|---|---|---|---|"]
    for a in FAMILIES:
        rows.append(f"| {a.title} | {', '.join(f'`{t}`' for t in a.model_types)} | {a.shape_rule} | "
                    f"{_global_export(a)} | {a.notes or '-'} |")
    return "\n".join(rows)


def _global_export(a: Adapter) -> str:
    if a.head_norms:
        return "capgap format only (q/k norm spans all heads)"
    if a.attn_norms_share_eps:
        return "capgap format; zero-padded vanilla export when hidden needs no padding"
    return "capgap format; exact zero-padded vanilla export"
