"""Plan an LLM-scale distillation before running it: FLOPs, GPU-hours, memory, sharding."""

from capgap.plan.estimate import ModelShape, Plan, distill_flops, memory_options, plan
from capgap.plan.specs import load_spec, spec_names

__all__ = ["ModelShape", "Plan", "distill_flops", "load_spec", "memory_options", "plan",
           "spec_names"]
