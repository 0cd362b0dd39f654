"""Model specs for the planner: built-in configs by name, a local folder, or a hub name.

Built-ins are plain ``config.json`` contents (``capgap/plan/specs/<name>.json``) so a plan
needs no download: LLaMA2-7B/13B, MiniMA-3B's shape, Pythia 70M-12B, GPT-2 124M-1.5B.
"""

from __future__ import annotations

import json
from importlib import resources

from transformers import CONFIG_MAPPING, PretrainedConfig

from capgap.errors import CapgapError
from capgap.models.io import load_config


def spec_names() -> list[str]:
    """Names of the built-in specs."""
    root = resources.files("capgap.plan") / "specs"
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".json"))


def load_spec(spec: str) -> PretrainedConfig:
    """A built-in key (``llama2-7b``), a local model/config folder, or a hub name."""
    if spec in spec_names():
        data = json.loads((resources.files("capgap.plan") / "specs" / f"{spec}.json").read_text())
        data = {k: v for k, v in data.items() if not k.startswith("_")}  # "_note": provenance
        return CONFIG_MAPPING[data.pop("model_type")](**data)

    try:
        return load_config(spec)
    except (CapgapError, OSError, ValueError) as e:
        raise CapgapError(f"unknown model spec {spec!r} ({e}); built-ins: "
                          f"{', '.join(spec_names())}") from None
