"""Model FLOPs per token: the one formula every stage uses (PaLM's MFU convention).

    forward  F = 2·N_mm + 4·S·A
    backward B = 2·N_mm + 8·S·A  (activation gradients)  + 2·N_mm  (weight gradients)

N_mm = weights used in matmuls (every projection and the LM head, tied or not; embedding
lookups, norms and biases excluded), A = Σ over layers of the attention width (query heads ×
head_dim; 0 for a layer that kept no heads), S the sequence length. The attention term is
QKᵀ and A·V (2·S·A each, counted whole as a dense kernel runs them, not halved for causal
masking); its backward takes dQ, dK, dA and dV, twice the forward. Training (forward +
backward with weight gradients) is therefore exactly 3·F. Elementwise work (softmax, norms,
activations, the loss) is not counted, as torch's ``FlopCounterMode`` does not count it.

:func:`flop_shape` reads N_mm and A from a model's actual modules, so a student pruned with
per-layer shapes (global allocation) is counted as it runs, layer by layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from capgap.models.arch.families import adapter_for


@dataclass(frozen=True)
class FlopShape:
    """What a model's FLOPs per token depend on (module docstring)."""

    matmul_params: int  # N_mm
    attn_width: int  # A: query heads x head_dim, summed over layers

    def forward_flops(self, seq_len: int) -> float:
        """Forward FLOPs per token at sequence length ``seq_len``."""
        return 2.0 * self.matmul_params + 4.0 * self.attn_width * seq_len

    def backward_flops(self, seq_len: int, weight_grads: bool = True) -> float:
        """Backward FLOPs per token; without ``weight_grads`` only the activations' gradients
        (a pass that differentiates masks or inputs of frozen weights)."""
        activations = 2.0 * self.matmul_params + 8.0 * self.attn_width * seq_len
        return activations + (2.0 * self.matmul_params if weight_grads else 0.0)

    def train_flops(self, seq_len: int) -> float:
        """Forward + backward FLOPs per trained token (= 3 x forward)."""
        return self.forward_flops(seq_len) + self.backward_flops(seq_len)


def flop_shape(model: nn.Module) -> FlopShape:
    """N_mm and A of ``model`` from its modules (works on the meta device, and for per-layer
    pruned shapes): every 2-D weight outside embeddings, and each layer's query width, read
    on the input axis of its attention output projection."""
    adapter = adapter_for(model.config)
    matmul = sum(m.weight.numel() for m in model.modules()
                 if isinstance(getattr(m, "weight", None), torch.Tensor) and m.weight.ndim == 2
                 and not isinstance(m, nn.Embedding))
    kinds = adapter.layer_params[f"{adapter.attn_out}.weight"]
    attn = 0
    for layer in adapter.layer_list(model):
        try:
            out = layer.get_submodule(adapter.attn_out)
        except AttributeError:  # a layer that kept no heads (EmptyAttention)
            continue
        attn += out.weight.shape[kinds.index("q")]
    return FlopShape(matmul, attn)
