"""The MiniMA recipe end to end on a tiny GQA LLaMA: prune -> distill -> instruction-tune,
vanilla checkpoints, resume by stage, the law check, and one-line errors for bad input."""

from __future__ import annotations

import copy
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from capgap.cli import main
from capgap.errors import CapgapError
from capgap.evaluate.heldout import EvalConfig
from capgap.law import fit_points
from capgap.law.cells import SIZE_UNITS
from capgap.recipe.minima import (
    DistillStage,
    DistillTrain,
    LawCheck,
    MinimaConfig,
    PruneStage,
    law_check,
    run_minima,
    shape_plan,
)
from capgap.recipe.mixture import MixtureSource
from capgap.recipe.sft import SFTConfig, SFTTrain
from capgap.recipe.shapes import minima_shape

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def tiny_llama(vocab: int, tokenizer) -> LlamaForCausalLM:  # noqa: ANN001
    """6 layers, hidden 64, 8 query heads sharing 4 KV heads (head_dim 8), FFN 160."""
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=vocab, hidden_size=64, num_hidden_layers=6, num_attention_heads=8,
        num_key_value_heads=4, intermediate_size=160, max_position_embeddings=256,
        eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id))


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_tokenizer, tiny_corpus):
    """A teacher with a chat template, one without, and two corpus files."""
    root = tmp_path_factory.mktemp("minima")
    model = tiny_llama(len(tiny_tokenizer), tiny_tokenizer)
    for name, template in (("teacher", CHATML), ("plain", None)):
        tok = copy.deepcopy(tiny_tokenizer)
        tok.chat_template = template
        model.save_pretrained(root / name)
        tok.save_pretrained(root / name)
    docs = [d.text for d in tiny_corpus.documents]
    (root / "a.txt").write_text("\n\n".join(docs[::2]))
    (root / "b.txt").write_text("\n\n".join(docs[1::2]))
    return root


def tiny_cfg(root, target: int | str = 135_000, sft: bool = True, law: str | None = None,
             teacher: str = "teacher", weights: tuple[float, float] = (0.7, 0.3)) -> MinimaConfig:
    train = DistillTrain(tokens=8 * 32 * 3, micro_batch_size=8, threads=1, eval_tokens=256)
    return MinimaConfig(
        teacher=str(root / teacher),
        prune=PruneStage(target_params=target, drop_layers=1, multiple=8, corpus=str(root / "a.txt"),
                         calib_tokens=512, batch_size=4, seq_len=32, device="cpu"),
        distill=DistillStage(mixture=[MixtureSource(str(root / "a.txt"), weights[0]),
                                      MixtureSource(str(root / "b.txt"), weights[1])],
                             mixture_tokens=6_000, seq_len=32, train=train,
                             eval=EvalConfig(max_bytes=2000)),
        sft=SFTConfig(enabled=sft, max_len=256, epochs=1,
                      train=SFTTrain(threads=1)),
        law=LawCheck(law=law, teachers=["1M"]) if law else LawCheck())


def write_law(path, ratio: float = 2.5):
    """A law fitted by capgap from points on T* = ratio * S."""
    law = fit_points([(s, ratio * s) for s in (5e4, 1e5, 2e5, 4e5)], n_boot=50,
                     size_unit=SIZE_UNITS["total"])
    path.write_text(json.dumps(law))
    return path


@pytest.fixture(scope="module")
def finished(world, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "recipe"
    law = write_law(world / "law.json")
    return run_minima(tiny_cfg(world, law=str(law)), out), out


def test_three_stages_end_to_end(world, finished):
    record, out = finished
    cfg = tiny_cfg(world)
    teacher = AutoModelForCausalLM.from_pretrained(cfg.teacher)
    shape = minima_shape(teacher.config, 135_000, multiple=8, drop_layers=1)
    assert record["shape"]["params"] == shape.params and abs(shape.error) <= 0.01
    assert shape.layers_kept == [1, 2, 3, 4] and shape.hidden < 64 and shape.ffn < 160
    for stage in ("1-prune", "2-distill", "3-sft"):
        assert (out / stage / "DONE.json").is_file()
        model = AutoModelForCausalLM.from_pretrained(out / stage / "model")  # vanilla HF
        c = model.config
        assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads,
                c.num_key_value_heads, c.intermediate_size) == (
            shape.layers, shape.hidden, shape.heads, shape.kv_heads, shape.ffn)
        assert sum(p.numel() for p in model.parameters()) == shape.params
    assert record["model"] == str(out / "3-sft" / "model")
    assert json.loads((out / "recipe.json").read_text()) == record
    assert (out / "DONE.json").is_file()
    meta = json.loads((out / "2-distill" / "metrics.json").read_text())
    assert meta["teacher_params"] == record["teacher_params"]
    shares = [s["realised_share"] for s in record["stages"]["distill"]["mixture"]["sources"]]
    assert shares == pytest.approx([0.7, 0.3], abs=0.1)  # 6k tokens in ~700-token pieces
    sft = record["stages"]["sft"]
    assert sft["conversations"] == 19 and sft["dropped_conversations"] == 0
    assert 1.0 < sft["val_response_loss"] < 7.0  # assistant tokens were scored (ln 300 = 5.7)
    assert "im_start" in (out / "3-sft" / "model" / "chat_template.jinja").read_text()


def test_streamed_mixture_feeds_the_same_distillation(world, finished, tmp_path):
    """distill.stream: the mixture is streamed into a token store (tokens:PATH) and the
    realised shares are reported as for the in-memory mixture."""
    from capgap.recipe.minima import distill_stage

    _, out = finished
    cfg = tiny_cfg(world)
    cfg.distill.stream, cfg.distill.shuffle_buffer = True, 4
    res = distill_stage(cfg, out / "1-prune" / "model", tmp_path / "d")
    assert res["corpus"].startswith("tokens:") and res["mixture"]["streamed"]
    shares = [s["realised_share"] for s in res["mixture"]["sources"]]
    assert shares == pytest.approx([0.7, 0.3], abs=0.1)
    assert 1.0 < res["val_loss"] < 7.0


def test_scores_choose_the_kept_units(world, finished):
    """The pruned weights are the teacher's rows/columns the saved scores rank highest."""
    from capgap.prune import Scores

    _, out = finished
    folder = out / "1-prune" / "model"
    plan = shape_plan(Scores.load(folder / "scores"), minima_shape(
        LlamaConfig.from_pretrained(world / "teacher"), 135_000, multiple=8, drop_layers=1))
    t = load_file(world / "teacher" / "model.safetensors")
    s = load_file(folder / "model.safetensors")
    h, layer = plan.hidden, plan.layers[0]
    torch.testing.assert_close(s["model.embed_tokens.weight"], t["model.embed_tokens.weight"][:, h])
    down = t[f"model.layers.{layer}.mlp.down_proj.weight"][h][:, plan.neurons[0]]
    torch.testing.assert_close(s["model.layers.0.mlp.down_proj.weight"], down)
    assert plan.neurons[0].tolist() != list(range(len(plan.neurons[0])))  # not just a prefix


def test_resume_skips_finished_stages(finished, tmp_path):
    record, out = finished
    again = tmp_path / "recipe"
    shutil.copytree(out, again)
    assert run_minima(tiny_cfg_from(again), again, resume=True)["stages"] == record["stages"]
    # A kill after stage 2: stage 3 and the recipe's completion marker are missing.
    shutil.rmtree(again / "3-sft")
    (again / "DONE.json").unlink()
    done = {s: (again / s / "DONE.json").read_text() for s in ("1-prune", "2-distill")}
    redone = run_minima(tiny_cfg_from(again), again, resume=True)
    assert {s: (again / s / "DONE.json").read_text() for s in done} == done
    events = [json.loads(x) for x in (again / "metrics.jsonl").read_text().splitlines()]
    stages = [(e["stage"], e["skipped"]) for e in events if e.get("event") == "stage"][-3:]
    assert stages == [("prune", True), ("distill", True), ("sft", False)]
    assert (again / "3-sft" / "DONE.json").is_file() and redone["stages"]["sft"]
    with pytest.raises(CapgapError, match="--overwrite"):
        run_minima(tiny_cfg_from(again), again)  # finished: neither flag -> refuse


def test_force_adds_instruction_tuning_later(finished, tmp_path):
    _, out = finished
    again = tmp_path / "recipe"
    shutil.copytree(out, again)
    shutil.rmtree(again / "3-sft")
    (again / "DONE.json").unlink()
    cfg = tiny_cfg_from(again)
    cfg.sft.enabled = False
    with pytest.raises(CapgapError, match="config differs at 'sft.enabled'"):
        run_minima(cfg, again, resume=True)
    assert "sft" not in run_minima(cfg, again, resume=True, force=True)["stages"]
    cfg.sft.enabled = True  # finished, then asked for one more stage
    record = run_minima(cfg, again, resume=True, force=True)
    assert record["model"] == str(again / "3-sft" / "model") and (again / "DONE.json").is_file()


def tiny_cfg_from(out) -> MinimaConfig:
    """The config a recipe folder was started with."""
    from capgap import config

    return config.load(MinimaConfig, out / "config.yaml")


def test_law_says_whether_the_teacher_is_recommended(world, finished):
    record, _ = finished
    law = record["law"]  # T* = 2.5 x 135k = 337k: our 297k teacher beats the 1M one
    assert law["teacher_is_recommended"] and "is that one" in law["message"]
    cfg = tiny_cfg(world, law=str(world / "law.json"))
    cfg.law.teachers = ["1M", "340k", str(world / "plain")]  # sizes or model folders
    config = LlamaConfig.from_pretrained(world / "teacher")
    other = law_check(cfg, config, minima_shape(config, 135_000, multiple=8, drop_layers=1))
    assert not other["teacher_is_recommended"] and other["recommended_teacher"] == 340_000
    assert other["candidates"] == [297_280, 340_000, 1_000_000]  # "plain" is our teacher's size
    assert "is NOT that one" in other["message"]


@pytest.mark.parametrize("change, match", [
    (dict(target="10M"), "not smaller than the teacher"),
    (dict(target=163_500), "the closest is"),
    (dict(teacher="plain"), "--chat-template FILE"),
    (dict(weights=(0.0, 0.0)), "sum to a positive number"),
])
def test_bad_input_is_one_line_before_anything_is_written(world, tmp_path, change, match):
    with pytest.raises(CapgapError, match=match) as e:
        run_minima(tiny_cfg(world, **change), tmp_path / "out")
    assert "\n" not in str(e.value) and not (tmp_path / "out").exists()


def test_cli_reports_bad_input_on_one_line(world, tmp_path, capsys):
    code = main(["recipe", "minima", "--teacher", str(world / "plain"), "--target-params", "135k",
                 "--sft", "sample", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "chat template" in err


@pytest.mark.parametrize("preset, teacher, shape", [
    ("llama2-7b-to-3b", LlamaConfig(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
                                    intermediate_size=11008, vocab_size=32000),
     (list(range(4, 28)), 3072, 24, 8192)),  # MiniMA-3B exactly
    ("smollm2-half", LlamaConfig(hidden_size=576, num_hidden_layers=30, num_attention_heads=9,
                                 num_key_value_heads=3, head_dim=64, intermediate_size=1536,
                                 vocab_size=49152, tie_word_embeddings=True),
     (list(range(1, 29)), 384, 6, 1152)),
])
def test_presets_give_the_intended_students(preset, teacher, shape):
    from capgap import config
    from capgap.recipe.minima import target_params

    cfg = config.preset("recipe", preset)
    p = cfg.prune
    s = minima_shape(teacher, target_params(cfg), multiple=p.multiple, drop_layers=p.drop_layers)
    assert (s.layers_kept, s.hidden, s.heads, s.ffn) == shape and abs(s.error) <= 0.01
    assert cfg.distill.objective.alpha == 0.5 and cfg.distill.train.optim.lr == 3e-4
