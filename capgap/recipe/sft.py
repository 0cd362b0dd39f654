"""Instruction tuning (MiniMA -> MiniChat): chat data, the tokenizer's chat template, loss on
the assistant's turns only.

A conversation is rendered with the tokenizer's chat template; the model is trained on the
tokens of each assistant turn (its content and the template's end-of-turn marker, so the
model learns to stop) and on nothing else: system and user turns and the template's
"assistant:" header get label -100. Assistant spans are found by rendering prefixes of the
conversation, ``render(messages[:i], generation_prompt)`` to ``render(messages[:i + 1])``,
which works for any template that renders a conversation as the concatenation of its turns.
Each span is tokenised on its own, so a token never straddles a prompt/response boundary.

Training reuses the shared loop (:func:`capgap.train.loop.train`): batches are a pure
function of (seed, step), so a killed run resumes exactly.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from capgap import config as cfgmod
from capgap.errors import CapgapError
from capgap.io import iter_jsonl, write_json
from capgap.models.anymodel import load_any_model, save_any_model
from capgap.runs import RunDir, is_complete
from capgap.train.loop import OptimConfig, TrainConfig, train
from capgap.train.loss import lm_loss

IGNORE = -100
SAMPLE = "sample"  # names the bundled chat set (capgap/recipe/data/chat_sample.jsonl)
ROLES = ("system", "user", "assistant")
TEMPLATE_HINT = ("give one with --chat-template FILE (a Jinja chat template) or the config key "
                 "sft.chat_template")


# Defaults live in subclasses, not in a default_factory: capgap.config builds a section that
# a YAML file or --set mentions from its *class*, so factory-made defaults would be lost.
@dataclass
class SFTOptim(OptimConfig):
    """Fine-tuning defaults: a small learning rate, 3 % warm-up, cosine to zero, no decay."""

    lr: float = 2e-5
    warmup_frac: float = 0.03
    min_lr_ratio: float = 0.0
    weight_decay: float = 0.0


@dataclass
class SFTTrain(TrainConfig):
    """The shared loop's settings with fine-tuning defaults."""

    micro_batch_size: int = 8
    optim: SFTOptim = field(default_factory=SFTOptim)


@dataclass
class SFTConfig:
    """Stage 3 of the MiniMA recipe: optional instruction tuning."""

    enabled: bool = False
    data: str = SAMPLE
    """A JSONL file, one ``{"messages": [{"role", "content"}, ...]}`` per line, or 'sample'."""
    chat_template: str | None = None
    """A Jinja chat template file, for tokenizers that have none (or to replace theirs)."""
    max_len: int = 512
    """Tokens per example; longer conversations are cut at the end."""
    epochs: float = 0.0
    """Passes over the training conversations; 0: train for ``train.tokens`` instead."""
    val_fraction: float = 0.05
    """Conversations held out to report the response loss (at least one)."""
    train: SFTTrain = field(default_factory=SFTTrain)

    def validate(self) -> None:
        if self.max_len < 2:
            raise CapgapError(f"sft.max_len must be >= 2, got {self.max_len}")
        if self.epochs < 0 or not 0 <= self.val_fraction < 1:
            raise CapgapError("sft.epochs must be >= 0 and sft.val_fraction in [0, 1)")


def data_path(data: str) -> Path:
    """The chat JSONL file ``data`` names ('sample' is the bundled one)."""
    if data == SAMPLE:
        return Path(str(resources.files("capgap.recipe") / "data" / "chat_sample.jsonl"))
    path = Path(data).expanduser()
    if not path.is_file():
        raise CapgapError(f"chat data {data}: no such file (a JSONL of {{'messages': [...]}} rows)")
    return path


def load_conversations(data: str) -> list[list[dict[str, str]]]:
    """Conversations from a chat JSONL, each checked: known roles, string contents, at least
    one assistant turn (else there is nothing to learn from it)."""
    path = data_path(data)
    out = []
    for lineno, row in iter_jsonl(path.read_text(encoding="utf-8").splitlines(), str(path)):
        msgs = row.get("messages") if isinstance(row, dict) else None
        ok = isinstance(msgs, list) and all(
            isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str)
            for m in msgs)
        if not ok or not any(m["role"] == "assistant" for m in msgs):
            raise CapgapError(f"{path}:{lineno}: expected {{'messages': [{{'role': "
                              f"{'|'.join(ROLES)}, 'content': str}}, ...]}} with an assistant turn")
        out.append([{"role": m["role"], "content": m["content"]} for m in msgs])
    if not out:
        raise CapgapError(f"{path}: no conversations")
    return out


def use_chat_template(tokenizer: Any, template_file: str | None) -> Any:
    """Install ``template_file`` on ``tokenizer`` if given; CapgapError if it then has none."""
    if template_file:
        path = Path(template_file).expanduser()
        if not path.is_file():
            raise CapgapError(f"chat template file {template_file} not found")
        tokenizer.chat_template = path.read_text(encoding="utf-8")
    if not getattr(tokenizer, "chat_template", None):
        name = tokenizer.name_or_path or type(tokenizer).__name__
        raise CapgapError(f"the tokenizer of {name} has no chat template; {TEMPLATE_HINT}")
    return tokenizer


def encode_chat(messages: list[dict[str, str]], tokenizer: Any,
                max_len: int) -> tuple[list[int], list[int]]:
    """(input ids, labels) of one conversation: labels copy the ids on assistant turns and are
    -100 everywhere else; cut to ``max_len`` tokens."""
    from jinja2 import TemplateError  # transformers' optional chat-template engine

    def render(msgs: list[dict[str, str]], prompt: bool) -> str:
        try:
            return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=prompt)
        except TemplateError as e:  # e.g. a template that insists on user/assistant alternation
            raise CapgapError(f"the chat template failed on a conversation prefix ({e}); "
                              f"{TEMPLATE_HINT}") from None

    full = render(messages, False)
    cuts = [0]  # text offsets: [masked, trained, masked, trained, ..., masked]
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        head, turn = render(messages[:i], True), render(messages[: i + 1], False)
        if not (full.startswith(head) and full.startswith(turn) and len(head) >= cuts[-1]):
            raise CapgapError("the chat template does not render a conversation as the "
                              f"concatenation of its turns, so responses cannot be located; {TEMPLATE_HINT}")
        cuts += [len(head), len(turn)]
    cuts.append(len(full))
    ids: list[int] = []
    labels: list[int] = []
    for k, (a, b) in enumerate(zip(cuts[:-1], cuts[1:], strict=True)):
        piece = tokenizer(full[a:b], add_special_tokens=False)["input_ids"] if b > a else []
        ids += piece
        labels += piece if k % 2 == 1 else [IGNORE] * len(piece)
    return ids[:max_len], labels[:max_len]


class ChatLoader:
    """Padded (B, max_len) batches of encoded conversations, a pure function of (seed, step):
    sample position p = step·B + i is example perm_e[p mod n] with
    perm_e = default_rng((seed, e)).permutation(n), e = p // n (every example once an epoch)."""

    def __init__(self, examples: list[tuple[list[int], list[int]]], seq_len: int,
                 batch_size: int, pad_id: int, seed: int = 0) -> None:
        self.examples, self.seq_len, self.batch_size = examples, seq_len, batch_size
        self.pad_id, self.seed = pad_id, seed
        self._perms: dict[int, np.ndarray] = {}

    def permutation(self, epoch: int) -> np.ndarray:
        """Example order of ``epoch`` (the two latest are kept: a batch may straddle two)."""
        if epoch not in self._perms:
            if len(self._perms) >= 2:
                self._perms.pop(min(self._perms))
            rng = np.random.default_rng((self.seed, epoch))
            self._perms[epoch] = rng.permutation(len(self.examples))
        return self._perms[epoch]

    def batch(self, step: int) -> dict[str, torch.Tensor]:
        pos = step * self.batch_size + np.arange(self.batch_size)
        epochs, offsets = np.divmod(pos, len(self.examples))
        rows = [self.examples[int(self.permutation(int(e))[o])]
                for e, o in zip(epochs, offsets, strict=True)]
        return collate(rows, self.seq_len, self.pad_id)


def collate(rows: list[tuple[list[int], list[int]]], seq_len: int,
            pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to ``seq_len``: pads get attention 0 and label -100."""
    ids = torch.full((len(rows), seq_len), pad_id, dtype=torch.long)  # (B, T)
    labels = torch.full_like(ids, IGNORE)
    mask = torch.zeros_like(ids)
    for r, (x, y) in enumerate(rows):
        ids[r, : len(x)], labels[r, : len(y)], mask[r, : len(x)] = (
            torch.tensor(x), torch.tensor(y), 1)
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def _step(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
    out = lm_loss(model, batch["input_ids"], batch["labels"], batch["attention_mask"])
    return out.loss, {"response_tokens": out.n_tokens}


def _split(n: int, fraction: float) -> tuple[list[int], list[int]]:
    """(train, val) example indices; a fixed shuffle, so the split never depends on the seed."""
    order = np.random.default_rng(0).permutation(n).tolist()
    n_val = max(1, round(n * fraction)) if fraction > 0 and n > 1 else 0
    return order[n_val:], order[:n_val]


def response_loss(model: nn.Module, examples: list[tuple[list[int], list[int]]], seq_len: int,
                  pad_id: int, batch_size: int = 8) -> float:
    """Mean CE over assistant tokens of ``examples`` (token-weighted)."""
    total, count = 0.0, 0
    device = next(model.parameters()).device
    with torch.no_grad():
        for i in range(0, len(examples), batch_size):
            b = {k: v.to(device) for k, v in
                 collate(examples[i:i + batch_size], seq_len, pad_id).items()}
            out = lm_loss(model, b["input_ids"], b["labels"], b["attention_mask"])
            total, count = total + float(out.ce) * out.n_tokens, count + out.n_tokens
    return total / max(count, 1)


def chat_examples(cfg: SFTConfig, tokenizer: Any) -> tuple[list, list, int]:
    """(train, held-out, dropped): encoded conversations; those cut by ``max_len`` before
    any assistant token are dropped (they would train nothing)."""
    convs = load_conversations(cfg.data)
    examples = [encode_chat(c, tokenizer, cfg.max_len) for c in convs]
    examples = [e for e in examples if any(y != IGNORE for y in e[1][1:])]  # label 0: no context
    if not examples:
        raise CapgapError(f"no assistant token falls within the first sft.max_len={cfg.max_len} "
                          "tokens of any conversation; raise sft.max_len")
    tr, va = _split(len(examples), cfg.val_fraction)
    return [examples[i] for i in tr], [examples[i] for i in va], len(convs) - len(examples)


def instruction_tune(cfg: SFTConfig, model_path: str | Path, out: str | Path,
                     resume: bool = False, overwrite: bool = False,
                     force: bool = False) -> dict[str, Any]:
    """Fine-tune the model at ``model_path`` on chat data into run folder ``out``; returns
    the summary stored in ``DONE.json`` (a finished run is returned as is). ``force``:
    resume although the config changed."""
    if resume and is_complete(out):
        return RunDir(Path(out), True, True).summary()
    cfg = cfgmod.checked(cfg)
    model, tokenizer = load_any_model(model_path)
    use_chat_template(tokenizer, cfg.chat_template)  # bad input fails before --out is touched
    train_ex, val_ex, dropped = chat_examples(cfg, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    tcfg = cfg.train
    if cfg.epochs > 0:  # whole padded batches: the loop counts B x T tokens a step
        b = tcfg.micro_batch_size * tcfg.grad_accum
        tcfg = replace(tcfg, tokens=math.ceil(cfg.epochs * len(train_ex) / b) * b * cfg.max_len)
    run = RunDir.open(out, resume=resume, overwrite=overwrite)
    run.write_config(cfg, force=force)
    held_out = (lambda m: response_loss(m, val_ex, cfg.max_len, pad)) if val_ex else None
    t0 = time.perf_counter()
    result = train(model.to(torch.float32),
                   ChatLoader(train_ex, cfg.max_len, tcfg.micro_batch_size, pad, tcfg.seed),
                   _step, tcfg, run, desc="sft",
                   eval_fn=(lambda m: {"response_loss": held_out(m)}) if held_out else None)
    model_dir = save_any_model(result.model, tokenizer, run.path / "model", overwrite=True)
    metrics = {"final_train_loss": result.final_train_loss,
               "val_response_loss": held_out(result.model) if held_out else None,
               "conversations": len(train_ex), "val_conversations": len(val_ex),
               "dropped_conversations": dropped, "tokens": result.tokens,
               "seconds": round(time.perf_counter() - t0, 2), "model_dir": str(model_dir)}
    write_json(run.path / "metrics.json", metrics)
    run.finish({"result": metrics})
    return run.summary()
