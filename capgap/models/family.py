"""Model families as data: a YAML ladder of sizes that builds standard HF configs.

A family is one architecture and a list of sizes (``hidden`` × ``layers``, optional
``heads`` / ``kv_heads`` / ``ffn``). Per-size values not given follow ``defaults``:
``heads = hidden / head_dim``, ``ffn = ffn_mult · hidden`` rounded to ``ffn_multiple_of``,
``kv_heads = heads / kv_group`` (llama only). Shipped families live in
``capgap/models/families/*.yaml``; any YAML path with the same schema works too.

Dropout is 0 in every family (as in Pythia and LLaMA): the pilot sweeps compare sizes, and
dropout would add one more knob that differs between GPT-2's defaults and the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from transformers import GPT2Config, GPTNeoXConfig, LlamaConfig, PretrainedConfig

from capgap.config import from_dict, read_yaml
from capgap.errors import CapgapError
from capgap.models.params import ParamCount, count_params_from_config

FAMILY_DIR = Path(__file__).parent / "families"

# Defaults that only make sense for some architectures; giving them elsewhere is an error.
_ONLY_FOR: dict[str, tuple[str, ...]] = {
    "rotary_pct": ("gpt_neox",),
    "use_parallel_residual": ("gpt_neox",),
    "rope_theta": ("gpt_neox", "llama"),
    "kv_group": ("llama",),
}
# GPT-2 ties its LM head to the token embedding; Pythia does not; see llama-micro.yaml.
_TIED_BY_DEFAULT = {"gpt2": True, "gpt_neox": False, "llama": False}


@dataclass
class Defaults:
    """Family-wide settings; ``None`` means the architecture's own convention."""

    head_dim: int = 16
    ffn_mult: float = 4.0
    ffn_multiple_of: int = 1
    tie_word_embeddings: bool | None = None
    norm_eps: float = 1e-5
    init_std: float = 0.02
    rotary_pct: float | None = None  # gpt_neox: fraction of each head rotated (Pythia: 0.25)
    use_parallel_residual: bool | None = None  # gpt_neox: x + attn(ln1 x) + mlp(ln2 x)
    rope_theta: float | None = None  # gpt_neox, llama
    kv_group: int | None = None  # llama: query heads per key/value head (GQA)


@dataclass
class SizeSpec:
    """One rung of the ladder as written in YAML."""

    name: str
    hidden: int
    layers: int
    heads: int | None = None
    kv_heads: int | None = None
    ffn: int | None = None


@dataclass(frozen=True)
class Dims:
    """A size with every dimension resolved."""

    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int  # == heads except for llama GQA
    head_dim: int
    ffn: int


@dataclass
class Family:
    """A size ladder of one architecture (see module docstring)."""

    name: str
    arch: Literal["gpt2", "gpt_neox", "llama"]
    seq_len: int
    vocab_size: int
    sizes: list[SizeSpec]
    defaults: Defaults = field(default_factory=Defaults)
    description: str = ""

    def check(self, where: str) -> None:
        """Validate cross-field rules; errors name ``where`` (the YAML file)."""
        try:
            self._check()
        except CapgapError as e:
            raise CapgapError(f"{where}: {e}") from None

    def _check(self) -> None:
        for key, archs in _ONLY_FOR.items():
            if getattr(self.defaults, key) is not None and self.arch not in archs:
                raise CapgapError(f"defaults.{key} applies to {'/'.join(archs)}, not {self.arch}")
        d = self.defaults
        positive = {"seq_len": self.seq_len, "vocab_size": self.vocab_size}
        positive |= {f"defaults.{k}": getattr(d, k) for k in ("head_dim", "ffn_multiple_of")}
        positive |= {"defaults.ffn_mult": d.ffn_mult, "defaults.kv_group": d.kv_group or 1}
        for key, value in positive.items():
            if value <= 0:
                raise CapgapError(f"{key} must be positive, got {value}")
        if not self.sizes:
            raise CapgapError("sizes: at least one size is needed")
        names = [s.name for s in self.sizes]
        if len(set(names)) != len(names):
            raise CapgapError(f"sizes: duplicate size names in {names}")
        for spec in self.sizes:
            self._resolve(spec)

    @property
    def size_names(self) -> list[str]:
        return [s.name for s in self.sizes]

    def dims(self, size_name: str) -> Dims:
        """Resolved dimensions of size ``size_name``."""
        for spec in self.sizes:
            if spec.name == size_name:
                return self._resolve(spec)
        raise CapgapError(
            f"family {self.name} has no size '{size_name}'; sizes: {', '.join(self.size_names)}"
        )

    def _resolve(self, s: SizeSpec) -> Dims:
        d = self.defaults
        where = f"sizes.{s.name}"
        for key in ("hidden", "layers", "heads", "kv_heads", "ffn"):
            value = getattr(s, key)
            if value is not None and value < 1:
                raise CapgapError(f"{where}.{key} must be positive, got {value}")
        if s.heads is None and s.hidden % d.head_dim:
            raise CapgapError(f"{where}: hidden {s.hidden} not divisible by head_dim {d.head_dim}")
        heads = s.heads or s.hidden // d.head_dim
        if s.hidden % heads:
            raise CapgapError(f"{where}: hidden {s.hidden} not divisible by heads {heads}")
        if s.kv_heads is not None and self.arch != "llama":
            raise CapgapError(f"{where}: kv_heads (GQA) applies to llama, not {self.arch}")
        kv_heads = s.kv_heads or heads // (d.kv_group or 1)
        if kv_heads < 1 or heads % kv_heads:
            raise CapgapError(f"{where}: heads {heads} not divisible into {kv_heads} kv_heads")
        head_dim = s.hidden // heads
        if self.arch == "gpt_neox":
            rot = int(head_dim * self._rotary_pct)  # transformers truncates the same way
            if rot < 2 or rot % 2:
                raise CapgapError(f"{where}: rotary_pct × head_dim = {rot} must be even and ≥ 2")
        mult = d.ffn_multiple_of
        # Nearest multiple, not ceil: 8/3 written as 2.6666667 must not round 512.00001 up.
        ffn = s.ffn or mult * max(1, round(d.ffn_mult * s.hidden / mult))
        return Dims(s.name, s.hidden, s.layers, heads, kv_heads, head_dim, ffn)

    @property
    def _rotary_pct(self) -> float:
        return 0.25 if self.defaults.rotary_pct is None else self.defaults.rotary_pct

    @property
    def tied(self) -> bool:
        tie = self.defaults.tie_word_embeddings
        return _TIED_BY_DEFAULT[self.arch] if tie is None else tie

    def build_config(
        self,
        size_name: str,
        vocab_size: int | None = None,
        bos_token_id: int | None = None,
        eos_token_id: int | None = None,
        pad_token_id: int | None = None,
    ) -> PretrainedConfig:
        """The standard transformers config of one size.

        ``vocab_size`` defaults to the family's; pass the tokenizer's (``len(tokenizer)``).
        Special token ids default to ``None`` rather than transformers' per-model defaults
        (GPT-2's 50256 would be out of range of a 4096-token vocabulary).
        """
        dims = self.dims(size_name)
        ids = {
            "bos_token_id": bos_token_id,
            "eos_token_id": eos_token_id,
            "pad_token_id": pad_token_id,
        }
        vocab = vocab_size or self.vocab_size
        for key, value in ids.items():
            if value is not None and not 0 <= value < vocab:
                raise CapgapError(f"{key}={value} out of range for vocab_size {vocab}")
        build = {"gpt2": _gpt2, "gpt_neox": _gpt_neox, "llama": _llama}[self.arch]
        return build(self, dims, vocab, ids)

    def param_counts(self, vocab_size: int | None = None) -> dict[str, ParamCount]:
        """Each size's :class:`ParamCount`, counted on the meta device (no allocation)."""
        return {
            name: count_params_from_config(self.build_config(name, vocab_size))
            for name in self.size_names
        }


def _gpt2(f: Family, d: Dims, vocab: int, ids: dict) -> GPT2Config:
    return GPT2Config(
        vocab_size=vocab,
        n_positions=f.seq_len,  # learned positions: counted as embedding parameters
        n_embd=d.hidden,
        n_layer=d.layers,
        n_head=d.heads,
        n_inner=d.ffn,
        activation_function="gelu_new",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        layer_norm_epsilon=f.defaults.norm_eps,
        initializer_range=f.defaults.init_std,
        tie_word_embeddings=f.tied,
        **ids,
    )


def _gpt_neox(f: Family, d: Dims, vocab: int, ids: dict) -> GPTNeoXConfig:
    par = f.defaults.use_parallel_residual
    return GPTNeoXConfig(
        vocab_size=vocab,
        hidden_size=d.hidden,
        num_hidden_layers=d.layers,
        num_attention_heads=d.heads,
        intermediate_size=d.ffn,
        hidden_act="gelu",
        max_position_embeddings=f.seq_len,
        rope_parameters={
            "rope_type": "default",
            "rope_theta": f.defaults.rope_theta or 10000.0,
            "partial_rotary_factor": f._rotary_pct,
        },
        use_parallel_residual=True if par is None else par,
        attention_dropout=0.0,
        hidden_dropout=0.0,
        layer_norm_eps=f.defaults.norm_eps,
        initializer_range=f.defaults.init_std,
        tie_word_embeddings=f.tied,
        **ids,
    )


def _llama(f: Family, d: Dims, vocab: int, ids: dict) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=vocab,
        hidden_size=d.hidden,
        intermediate_size=d.ffn,  # SwiGLU: gate and up are both hidden × ffn
        num_hidden_layers=d.layers,
        num_attention_heads=d.heads,
        num_key_value_heads=d.kv_heads,
        head_dim=d.head_dim,
        hidden_act="silu",
        max_position_embeddings=f.seq_len,
        rope_parameters={"rope_type": "default", "rope_theta": f.defaults.rope_theta or 10000.0},
        rms_norm_eps=f.defaults.norm_eps,
        initializer_range=f.defaults.init_std,
        tie_word_embeddings=f.tied,
        attention_bias=False,
        mlp_bias=False,
        **ids,
    )


def list_families() -> list[str]:
    """Names of the shipped families (``capgap/models/families/*.yaml``)."""
    return sorted(p.stem for p in FAMILY_DIR.glob("*.yaml"))


def load_family(name_or_path: str | Path) -> Family:
    """Load a shipped family by name, or any family YAML by path."""
    text = str(name_or_path)
    path = Path(text)
    if not (path.suffix in (".yaml", ".yml") or path.exists()):
        path = FAMILY_DIR / f"{text}.yaml"
        if not path.is_file():
            raise CapgapError(
                f"unknown model family '{text}'; shipped: {', '.join(list_families())} "
                "(or give the path of a family YAML file)"
            )
    family = from_dict(Family, read_yaml(path), where=str(path))
    family.check(str(path))
    return family
