"""4-bit NF4 for the fused experts of Mixtral-style MoE models, for QLoRA.

In transformers 5 an MoE layer's experts are two fused 3-D parameters (`mlp.experts.gate_up_proj`,
`[experts, 2 x intermediate, hidden]`, and `mlp.experts.down_proj`), not `nn.Linear` modules, and
`BitsAndBytesConfig(load_in_4bit=True)` replaces `nn.Linear` modules only. So a "4-bit" Mixtral
keeps its experts, 45 of Mixtral 8x7B's 46.7 billion parameters, in bf16 (90 GB), and PEFT's
`prepare_model_for_kbit_training` then casts every parameter that is not `Params4bit` to fp32
(180 GB). `experts_quantize` replaces each such experts module with `Experts4bit`: one
bitsandbytes `Linear4bit` (NF4, double quantization) per expert matrix, quantized one expert at
a time, so the model is 4-bit throughout. The routing and the arithmetic are those of
`MixtralExperts.forward`; only the matrix products go through bitsandbytes.

The training recipe calls it after loading in 4-bit (`TrainConfig.quantize_experts`, on by
default). LoRA on the experts themselves (`lora_experts`) needs the fused bf16 parameters, so
with it the experts stay in bf16. See docs/retraining.md for the memory this takes.
"""

from __future__ import annotations

import torch
from torch import nn


def _is_fused_experts(module: nn.Module) -> bool:
    """Mixtral's layout: gate_up_proj [E, 2I, H] and down_proj [E, H, I], (out, in) per expert.
    Other layouts (Llama 4 stores [E, H, 2I]) are left alone rather than computed wrongly."""
    gate_up, down = getattr(module, "gate_up_proj", None), getattr(module, "down_proj", None)
    if not (isinstance(gate_up, nn.Parameter) and isinstance(down, nn.Parameter)):
        return False
    if gate_up.dim() != 3 or down.dim() != 3 or getattr(module, "has_bias", False) or not hasattr(module, "act_fn"):
        return False
    experts, double_intermediate, hidden = gate_up.shape
    return tuple(down.shape) == (experts, hidden, double_intermediate // 2) and double_intermediate % 2 == 0


class Experts4bit(nn.Module):
    """A Mixtral-style experts module whose matrices are bitsandbytes 4-bit NF4 `Linear4bit`s."""

    def __init__(self, experts: nn.Module, *, compute_dtype: torch.dtype, double_quant: bool = True) -> None:
        import bitsandbytes as bnb

        super().__init__()
        device = experts.gate_up_proj.device
        self.num_experts = experts.gate_up_proj.shape[0]
        self.act_fn = experts.act_fn

        def linear4bit(weight: torch.Tensor) -> nn.Module:
            out_features, in_features = weight.shape
            with torch.device("meta"):  # no full-precision copy is allocated for the layer
                layer = bnb.nn.Linear4bit(
                    in_features,
                    out_features,
                    bias=False,
                    compute_dtype=compute_dtype,
                    compress_statistics=double_quant,
                    quant_type="nf4",
                )
            # Moving a Params4bit to a device quantizes it there (CUDA, or bitsandbytes' CPU backend).
            layer.weight = bnb.nn.Params4bit(
                weight.detach().to(compute_dtype).contiguous(),
                requires_grad=False,
                compress_statistics=double_quant,
                quant_type="nf4",
                module=layer,
            ).to(device)
            return layer

        self.gate_up = nn.ModuleList()
        self.down = nn.ModuleList()
        for index in range(self.num_experts):
            self.gate_up.append(linear4bit(experts.gate_up_proj[index]))
            self.down.append(linear4bit(experts.down_proj[index]))

    def forward(
        self, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor
    ) -> torch.Tensor:
        final_hidden_states = torch.zeros_like(hidden_states)
        with torch.no_grad():
            # num_experts + 1 as in MixtralExperts: index num_experts marks a token no local expert takes
            expert_mask = nn.functional.one_hot(top_k_index, num_classes=self.num_experts + 1).permute(2, 1, 0)
            expert_hit = torch.greater(expert_mask.sum(dim=(-1, -2)), 0).nonzero()
        for expert_index in expert_hit:
            expert_index = int(expert_index[0])
            if expert_index == self.num_experts:
                continue
            top_k_pos, token_index = torch.where(expert_mask[expert_index])
            gate, up = self.gate_up[expert_index](hidden_states[token_index]).chunk(2, dim=-1)
            expert_output = self.down[expert_index](self.act_fn(gate) * up)
            expert_output = expert_output * top_k_weights[token_index, top_k_pos, None]
            final_hidden_states.index_add_(0, token_index, expert_output.to(final_hidden_states.dtype))
        return final_hidden_states


def experts_quantize(model: nn.Module, *, compute_dtype: torch.dtype = torch.bfloat16) -> int:
    """Replaces every fused experts module of `model` with `Experts4bit`, one layer at a time (the
    layer's full-precision experts are freed before the next is quantized). Returns how many."""
    names = [name for name, module in model.named_modules() if _is_fused_experts(module)]
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, Experts4bit(getattr(parent, child), compute_dtype=compute_dtype))
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return len(names)
