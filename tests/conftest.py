"""Test-wide settings: offline, private caches, deterministic threads."""

from __future__ import annotations

import os
import tempfile

# Set before transformers/huggingface_hub are imported anywhere.
_TMP = tempfile.mkdtemp(prefix="capgap-tests-")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HOME"] = os.path.join(_TMP, "hf")
os.environ.setdefault("CAPGAP_CACHE", os.path.join(_TMP, "cache"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

torch.set_num_threads(1)
