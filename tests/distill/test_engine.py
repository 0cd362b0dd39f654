"""The distillation stage end to end: teacher -> student run folder, baseline, bad input."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from capgap.cli import main
from capgap.distill.engine import DistillConfig, DistillDataConfig, ObjectiveConfig, distill
from capgap.errors import CapgapError
from capgap.evaluate.heldout import EvalConfig
from capgap.train.loop import TrainConfig


def save_tiny(path, tokenizer, hidden: int, layers: int, seed: int, vocab: int | None = None):
    torch.manual_seed(seed)
    cfg = GPTNeoXConfig(vocab_size=vocab or len(tokenizer), hidden_size=hidden,
                        num_hidden_layers=layers, num_attention_heads=hidden // 16,
                        intermediate_size=4 * hidden, max_position_embeddings=64, rotary_pct=0.25,
                        eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id)
    GPTNeoXForCausalLM(cfg).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def pair(tmp_path_factory, tiny_tokenizer, tiny_corpus):
    root = tmp_path_factory.mktemp("distill")
    (root / "corpus.txt").write_text("\n\n".join(d.text for d in tiny_corpus.documents))
    return (save_tiny(root / "teacher", tiny_tokenizer, 32, 2, 0),
            save_tiny(root / "student", tiny_tokenizer, 16, 1, 1), root)


def cfg_for(teacher, student, corpus, alpha=0.5, divergence="soft_ce") -> DistillConfig:
    return DistillConfig(
        student=str(student), teacher=str(teacher) if teacher else None,
        data=DistillDataConfig(corpus=str(corpus), seq_len=32),
        objective=ObjectiveConfig(alpha=alpha, divergence=divergence),
        train=TrainConfig(tokens=32 * 8 * 6, micro_batch_size=8, threads=1, eval_tokens=256),
        eval=EvalConfig(max_bytes=4000))


def test_distill_and_baseline(pair, tmp_path):
    teacher, student, root = pair
    corpus = root / "corpus.txt"
    from capgap import config

    kd = distill(config.from_dict(DistillConfig, config.to_dict(cfg_for(teacher, student, corpus))),
                 tmp_path / "kd")
    base = distill(cfg_for(None, student, corpus, alpha=1.0), tmp_path / "base")
    assert kd.teacher_params is not None and base.teacher_params is None
    assert kd.val_loss != base.val_loss  # the teacher changed the gradient
    assert (tmp_path / "kd" / "DONE.json").exists()
    metrics = [json.loads(x) for x in (tmp_path / "kd" / "metrics.jsonl").read_text().splitlines()]
    assert all("kd" in m for m in metrics if "loss" in m and "event" not in m)
    # The distilled student reloads and scores the same.
    from capgap.evaluate.api import evaluate_model

    res = evaluate_model(str(tmp_path / "kd"), corpus=str(corpus), max_bytes=4000, seq_len=32)
    assert res["loss"] == pytest.approx(kd.val_loss, rel=1e-5)


@pytest.mark.parametrize("divergence", ["reverse_kl", "jsd", "tv"])
def test_other_objectives_run(pair, tmp_path, divergence):
    teacher, student, root = pair
    res = distill(cfg_for(teacher, student, root / "corpus.txt", divergence=divergence),
                  tmp_path / divergence)
    assert res.val_loss < 6.0  # ln(300) = 5.70 is uniform guessing; must stay sane


def test_vocab_mismatch_is_refused(pair, tmp_path, tiny_tokenizer):
    teacher, student, root = pair
    other = save_tiny(tmp_path / "other", tiny_tokenizer, 32, 1, 2, vocab=len(tiny_tokenizer) + 8)
    with pytest.raises(CapgapError, match="vocab"):
        distill(cfg_for(other, student, root / "corpus.txt"), tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_cli_errors(pair, tmp_path, capsys):
    teacher, student, root = pair
    assert main(["distill", "--student", str(student), "--out", str(tmp_path / "a"),
                 "--tokens", "1000"]) == 2
    assert "teacher is required" in capsys.readouterr().err
    assert main(["distill", "--student", str(student), "--teacher", str(teacher),
                 "--divergence", "nope", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and err.count("\n") == 1


def test_run_folder_has_metrics_json(pair, tmp_path):
    teacher, student, root = pair
    res = distill(cfg_for(teacher, student, root / "corpus.txt"), tmp_path / "m")
    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert metrics["val_loss"] == pytest.approx(res.val_loss)
    assert metrics["tokens"] == res.tokens == 32 * 8 * 6 and metrics["seconds"] > 0
    assert metrics["teacher_params"] > metrics["params"] > 0
    train_losses = [r["loss"] for r in map(json.loads, (tmp_path / "m" / "metrics.jsonl")
                                           .read_text().splitlines()) if "event" not in r]
    assert metrics["final_train_loss"] == pytest.approx(train_losses[-1])
    assert {"val_ppl", "val_bpb", "params_non_embedding"} <= set(metrics)


def test_budget_below_one_step_is_refused(pair, tmp_path):
    teacher, student, root = pair
    cfg = cfg_for(teacher, student, root / "corpus.txt")
    cfg.train.tokens = 8 * 32 - 1  # one step is micro_batch_size x seq_len = 256 tokens
    with pytest.raises(CapgapError, match="less than one optimizer step"):
        distill(cfg, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_smaller_teacher_warns_once(pair, tmp_path, capsys):
    teacher, student, root = pair
    distill(cfg_for(student, teacher, root / "corpus.txt"), tmp_path / "w")  # roles swapped
    err = capsys.readouterr().err
    assert err.count("smaller than the student") == 1
    events = [json.loads(x) for x in (tmp_path / "w" / "metrics.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events if e.get("event") == "warning"] == ["warning"]


def test_resume_with_changed_config_names_every_key(pair, tmp_path):
    from capgap.runs import RunDir

    teacher, student, root = pair
    cfg = cfg_for(teacher, student, root / "corpus.txt")
    RunDir.open(tmp_path / "r").write_config(cfg)  # an interrupted run: config, no checkpoint
    changed = cfg_for(teacher, student, root / "corpus.txt", alpha=0.3)
    changed.train.optim.lr = 1e-3
    with pytest.raises(CapgapError, match=r"'objective.alpha', 'train.optim.lr'.*--force"):
        distill(changed, tmp_path / "r", resume=True)
    distill(changed, tmp_path / "r", resume=True, force=True)
    events = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert {"event": "config_changed", "keys": ["objective.alpha", "train.optim.lr"]}.items() \
        <= next(e for e in events if e.get("event") == "config_changed").items()


def test_scratch_init_reinitialises_same_shape(pair):
    from capgap.models.anymodel import load_any_model
    from capgap.models.init import reinitialise

    _, student, _ = pair
    given, _ = load_any_model(student)
    a, b = reinitialise(load_any_model(student)[0], 0), reinitialise(load_any_model(student)[0], 0)
    w = "gpt_neox.layers.0.mlp.dense_h_to_4h.weight"
    sa, sb, sg = a.state_dict(), b.state_dict(), given.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)  # seeded: reproducible
    assert sa.keys() == sg.keys() and all(sa[k].shape == sg[k].shape for k in sa)
    assert not torch.equal(sa[w], sg[w])
    assert sa[w].std().item() == pytest.approx(a.config.initializer_range, rel=0.2)


def test_scratch_init_keeps_the_rotary_frequencies_of_a_global_pruned_student(pair,
                                                                             tiny_token_store):
    """A global-pruned config holds per-layer maxima, so hidden / most heads need not be the
    head size; re-initialising must not recompute the positions from it (the student would
    train on other rotary frequencies than it is reloaded and evaluated with)."""
    from capgap.data import PackedLoader
    from capgap.models.anymodel import load_any_model
    from capgap.models.init import reinitialise
    from capgap.prune import prune, score

    teacher, _, _ = pair
    model, _ = load_any_model(teacher)
    calib = PackedLoader(tiny_token_store.train, seq_len=32, batch_size=4)
    pruned = prune(model, score(model, [calib.batch(i) for i in range(2)]), sparsity=0.3,
                   allocation="global").model
    c = pruned.config
    assert c.hidden_size != 16 * c.num_attention_heads  # the case that went wrong
    before = {n: b.clone() for n, b in pruned.named_buffers()}
    assert any(n.endswith("inv_freq") for n in before)
    reinitialise(pruned, 0)
    after = dict(pruned.named_buffers())
    assert before.keys() == after.keys()
    assert all(torch.equal(before[n], after[n]) for n in before)


def test_global_pruned_student_keeps_its_format(pair, tmp_path, tiny_tokenizer, tiny_token_store):
    """A capgap-format (global allocation) student distils, from scratch too, and stays so."""
    from capgap.data import PackedLoader
    from capgap.models.anymodel import load_any_model
    from capgap.models.pruned import META_NAME
    from capgap.prune import prune, save_pruned, score

    teacher, _, root = pair
    model, _ = load_any_model(teacher)
    calib = PackedLoader(tiny_token_store.train, seq_len=32, batch_size=4)
    scores = score(model, [calib.batch(i) for i in range(2)])
    pruned = save_pruned(prune(model, scores, sparsity=0.5, allocation="global"), tiny_tokenizer,
                         tmp_path / "pruned", export="capgap")
    cfg = cfg_for(teacher, pruned, root / "corpus.txt")
    cfg.init = "scratch"
    res = distill(cfg, tmp_path / "kd")
    out = tmp_path / "kd" / "model"
    assert (out / META_NAME).exists()
    reloaded, _ = load_any_model(out)
    src, _ = load_any_model(pruned)
    assert {k: v.shape for k, v in reloaded.state_dict().items()} == \
        {k: v.shape for k, v in src.state_dict().items()}
    from capgap.evaluate.api import evaluate_model

    again = evaluate_model(str(out), corpus=str(root / "corpus.txt"), max_bytes=4000, seq_len=32)
    assert again["loss"] == pytest.approx(res.val_loss, rel=1e-5)
