"""Offline teacher: its top-k log-probabilities computed once, reused by every student.

In a sweep every student of a teacher is distilled on the same data, so running the frozen
teacher again for each student repeats identical work. A cache entry holds, for every training
window the token budget visits, the teacher's k likeliest next tokens and their
log-probabilities plus the log of the remaining mass (see
:func:`capgap.distill.losses.coarse_grain` for how the loss uses it). Per token it costs
``k * (2 or 4 + 2 or 4) + 4`` bytes: 260 B at k = 64 with uint16 ids and fp16 log-probs.

Why windows: the :class:`~capgap.data.loader.PackedLoader` batch is a pure function of
(seed, step) made of fixed ``seq_len`` windows of the token stream, so a window index names
its teacher outputs exactly, whatever the batch size, accumulation or number of processes.

An entry lives under ``<capgap cache>/teacher/<key>/`` and is written once, atomically
(:func:`capgap.data.cache.build_once`); the key hashes the teacher's weights and dtype, the
token stream, seq_len, k, temperature, storage dtype and the set of windows. Files::

    windows.npy   (W,)       int64, sorted window ids
    indices.npy   (W, T, k)  uint16 (vocab <= 65536) or int32
    logp.npy      (W, T, k)  float16 or float32
    other.npy     (W, T)     float32
    meta.json
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from capgap.data.cache import build_once, cache_dir
from capgap.distill.losses import LOG_FLOOR, TopKTeacher
from capgap.errors import CapgapError
from capgap.io import write_json
from capgap.train.loss import capped, decoder_body, lm_head, softcap

_FORMAT = 1


@dataclass
class TeacherCacheConfig:
    """``teacher_cache:`` run the teacher once per (teacher, data, seq_len, k) and reuse it."""

    enabled: bool = False
    top_k: int = 64
    """Teacher tokens kept per position; the rest is one "other" bucket."""
    dtype: Literal["fp16", "fp32"] = "fp16"
    """Storage of the top-k log-probabilities (fp16 halves the file; ~1e-3 relative)."""
    batch_size: int = 0
    """Windows per teacher forward while building (0: train.micro_batch_size)."""

    def validate(self) -> None:
        if self.top_k < 1:
            raise CapgapError(f"teacher_cache.top_k must be >= 1, got {self.top_k}")
        if self.dtype not in ("fp16", "fp32"):
            raise CapgapError(f"teacher_cache.dtype must be fp16 or fp32, got {self.dtype!r}")


def visited_windows(loader: Any, micro_steps: int) -> np.ndarray:
    """Sorted ids of every window batches ``0 .. micro_steps - 1`` of ``loader`` read; (W,)."""
    samples = micro_steps * loader.batch_size
    n = loader.num_windows
    if samples >= n:
        return np.arange(n, dtype=np.int64)
    return np.sort(loader.permutation(0)[:samples]).astype(np.int64)


def fingerprint(model: nn.Module) -> str:
    """A hash of the model's class, config and every weight (name, dtype, shape, bytes)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(type(model).__name__.encode())
    cfg = getattr(model, "config", None)
    if cfg is not None:
        h.update(cfg.to_json_string(use_diff=False).encode())
    for name, t in sorted(model.state_dict().items()):
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class TeacherCache:
    """A built entry, memory-mapped read-only; :meth:`lookup` gives a batch's teacher rows."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.windows = np.load(path / "windows.npy")
        self.indices = np.load(path / "indices.npy", mmap_mode="r")  # (W, T, k)
        self.logp = np.load(path / "logp.npy", mmap_mode="r")  # (W, T, k)
        self.other = np.load(path / "other.npy", mmap_mode="r")  # (W, T)

    @property
    def top_k(self) -> int:
        return int(self.indices.shape[-1])

    def lookup(self, windows: np.ndarray) -> TopKTeacher:
        """Teacher rows for window ids (B,): fields (B, T, k) and (B, T), in that order."""
        slots = np.searchsorted(self.windows, windows)
        bad = (slots >= len(self.windows)) | (self.windows[np.minimum(slots, len(self.windows) - 1)]
                                              != windows)
        if bad.any():
            raise CapgapError(f"teacher cache {self.path} lacks window {int(windows[bad][0])}; "
                              "it was built for another token budget or seed")
        return TopKTeacher(
            torch.from_numpy(self.indices[slots].astype(np.int64)),
            torch.from_numpy(np.asarray(self.logp[slots], dtype=np.float32)),
            torch.from_numpy(np.asarray(self.other[slots], dtype=np.float32)),
        )


class CachedTeacherLoader:
    """A PackedLoader whose batches also carry the cached teacher rows of their windows."""

    def __init__(self, loader: Any, cache: TeacherCache) -> None:
        self.loader = loader
        self.cache = cache
        self.seq_len = loader.seq_len
        self.batch_size = loader.batch_size

    def batch(self, step: int) -> dict[str, Tensor]:
        """{"input_ids": (B, T), "t_indices": (B, T, k), "t_logp": (B, T, k), "t_other": (B, T)}."""
        t = self.cache.lookup(self.loader.window_indices(step))
        return {"input_ids": self.loader.batch(step), "t_indices": t.indices, "t_logp": t.logp,
                "t_other": t.other}


@torch.no_grad()
def teacher_topk(teacher: nn.Module, input_ids: Tensor, k: int, temperature: float) -> TopKTeacher:
    """The teacher's top-k log-probabilities at ``temperature`` and its residual mass.

    input_ids (B, T) -> indices (B, T, k), logp (B, T, k), other (B, T). Full [B, T, V] logits
    exist only for this forward (no gradient is ever needed); fp32 softmax.
    """
    hidden = decoder_body(teacher)(input_ids=input_ids, use_cache=False).last_hidden_state
    head = lm_head(teacher)
    logits = capped(F.linear(hidden, head.weight, head.bias), softcap(teacher))
    log_p = F.log_softmax(logits.float() / temperature, -1)
    logp, indices = log_p.topk(k, dim=-1)  # (B, T, k)
    rest = torch.logsumexp(log_p.scatter(-1, indices, -torch.inf), dim=-1)  # (B, T)
    return TopKTeacher(indices, logp, rest.clamp_min(LOG_FLOOR))


def _build(tmp: Path, teacher: nn.Module, tokens: np.ndarray, windows: np.ndarray, seq_len: int,
           cfg: TeacherCacheConfig, temperature: float, batch_size: int, meta: dict) -> None:
    vocab = lm_head(teacher).out_features
    w, k = len(windows), cfg.top_k
    idx_dtype = np.uint16 if vocab <= 1 << 16 else np.int32
    lp_dtype = np.float16 if cfg.dtype == "fp16" else np.float32
    fmt = np.lib.format.open_memmap
    indices = fmt(tmp / "indices.npy", mode="w+", dtype=idx_dtype, shape=(w, seq_len, k))
    logp = fmt(tmp / "logp.npy", mode="w+", dtype=lp_dtype, shape=(w, seq_len, k))
    other = fmt(tmp / "other.npy", mode="w+", dtype=np.float32, shape=(w, seq_len))
    device = next(teacher.parameters()).device
    t0 = time.perf_counter()
    for first in tqdm(range(0, w, batch_size), desc="teacher cache", unit="batch", leave=False):
        ids = windows[first:first + batch_size]
        rows = np.stack([tokens[i * seq_len:(i + 1) * seq_len] for i in ids]).astype(np.int64)
        out = teacher_topk(teacher, torch.from_numpy(rows).to(device), k, temperature)
        sl = slice(first, first + len(ids))
        indices[sl] = out.indices.cpu().numpy().astype(idx_dtype)
        logp[sl] = out.logp.cpu().numpy().astype(lp_dtype)
        other[sl] = out.other.cpu().numpy()
    for arr in (indices, logp, other):
        arr.flush()
    np.save(tmp / "windows.npy", windows)
    write_json(tmp / "meta.json", {**meta, "format": _FORMAT, "windows": w, "vocab": vocab,
                                   "build_seconds": time.perf_counter() - t0})


def build_or_load(
    teacher: nn.Module, loader: Any, micro_steps: int, cfg: TeacherCacheConfig,
    temperature: float, data_key: str, root: Path | None = None,
) -> TeacherCache:
    """The cache entry covering ``micro_steps`` batches of ``loader``; built if absent.

    ``data_key`` names the token stream (e.g. the TokenStore folder, itself content-addressed).
    """
    vocab = lm_head(teacher).out_features
    if cfg.top_k >= vocab:
        raise CapgapError(f"teacher_cache.top_k={cfg.top_k} must be below the vocabulary "
                          f"({vocab}); k = V - 1 already keeps the whole distribution")
    windows = visited_windows(loader, micro_steps)
    meta = {"teacher": fingerprint(teacher), "data": data_key, "seq_len": loader.seq_len,
            "top_k": cfg.top_k, "temperature": temperature, "dtype": cfg.dtype,
            "windows_sha": hashlib.sha256(windows.tobytes()).hexdigest()}
    key = hashlib.sha256(repr(sorted(meta.items())).encode()).hexdigest()[:20]
    path = (root or cache_dir()) / "teacher" / key
    bs = cfg.batch_size or loader.batch_size
    build_once(path, lambda tmp: _build(tmp, teacher, loader.tokens, windows, loader.seq_len, cfg,
                                        temperature, bs, meta))
    return TeacherCache(path)
