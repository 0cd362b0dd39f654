"""``capgap prune``: end to end on a tiny local model, and one-line refusals that write nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, OPTConfig

from capgap.cli import main
from capgap.models.params import count_params
from capgap.prune import load_pruned
from capgap.units import parse_count
from tests.prune.conftest import VOCAB, tiny_model
from tests.prune.test_io import tiny_tokenizer


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:  # noqa: ANN001
    root = tmp_path_factory.mktemp("cli")
    model = tiny_model("gpt2", dtype=torch.float32)
    model.save_pretrained(root / "teacher")
    tiny_tokenizer().save_pretrained(root / "teacher")
    g = torch.Generator().manual_seed(0)
    words = torch.randint(2, VOCAB, (6000,), generator=g).tolist()
    text = "\n\n".join(" ".join(f"w{w}" for w in words[i : i + 300]) for i in range(0, 6000, 300))
    (root / "corpus.txt").write_text(text)
    return {"root": root, "teacher": root / "teacher", "corpus": root / "corpus.txt"}


def _run(setup: dict[str, Path], out: str, *flags: str) -> int:
    calib = ["--corpus", str(setup["corpus"]), "--calib-tokens", "256", "--batch-size", "4", "--seq-len", "16"]
    return main(["prune", str(setup["teacher"]), "--out", str(setup["root"] / out), *calib, *flags])


def test_prune_score_once_then_a_ladder_from_saved_scores(setup: dict[str, Path], capsys) -> None:  # noqa: ANN001
    assert _run(setup, "s50", "--sparsity", "0.5") == 0
    line = capsys.readouterr().out
    assert "sparsity 0.5" in line and "capgap format" in line
    out = setup["root"] / "s50"
    report = json.loads((out / "prune_report.json").read_text())
    model, tok = load_pruned(out)
    assert report["params_after"] == count_params(model).total
    assert report["calibration_tokens"] == 256 and tok is not None
    assert (out / "scores" / "scores.safetensors").exists()
    teacher_params = count_params(AutoModelForCausalLM.from_pretrained(setup["teacher"])).total
    target = int(0.4 * teacher_params)
    assert _run(setup, "u40", "--target-params", str(target), "--allocation", "uniform",
                "--scores", str(out / "scores"), "--json") == 0
    report = json.loads(capsys.readouterr().out)
    student = AutoModelForCausalLM.from_pretrained(setup["root"] / "u40")  # vanilla checkpoint
    assert abs(count_params(student).total - target) <= 0.01 * target
    assert report["params_after"] == count_params(student).total
    assert report["scores_from"].endswith("scores")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--sparsity", "1.0"], "sparsity must be in [0, 1)"),
        (["--sparsity", "-0.1"], "sparsity must be in [0, 1)"),
        (["--target-params", "1e9"], "larger than the model"),
        (["--sparsity", "0.5", "--calib-tokens", "10"], "smaller than one batch"),
        (["--sparsity", "0.5", "--allocation", "uniform", "--multiple", "128"], "closest valid multiple is 64"),
        (["--sparsity", "0.999"], "below the smallest valid student"),
        (["--sparsity", "0.5", "--method", "shortgpt"], "unknown pruning method 'shortgpt'; choose from"),
        (["--sparsity", "0.5", "--method", "random", "--scorer", "magnitude"], "disagree"),
        (["--sparsity", "0.95", "--method", "block_influence"], "below the smallest depth-only student"),
        (["--sparsity", "0.5", "--method", "block_influence", "--drop-layers", "1"], "chooses the layers"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(setup: dict[str, Path], capsys, flags: list[str], message: str) -> None:  # noqa: ANN001
    assert _run(setup, "bad", *flags) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("capgap prune: error: ") and message in err[-1]
    assert "scoring" not in "".join(err)  # refused before the calibration pass
    assert not (setup["root"] / "bad").exists()


def test_calibration_corpus_smaller_than_one_batch(setup: dict[str, Path], capsys) -> None:  # noqa: ANN001
    small = setup["root"] / "small.txt"
    small.write_text(" ".join(f"w{i % 100 + 2}" for i in range(3000)))  # ~3k tokens, 12 kB
    flags = ["--corpus", str(small), "--batch-size", "512", "--calib-tokens", "8192"]  # 512 x 16 > 3k
    assert _run(setup, "bad", "--sparsity", "0.5", *flags) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("capgap prune: error: ") and "batch" in err
    assert not (setup["root"] / "bad").exists()


def test_unsupported_architecture_names_the_supported_ones(setup: dict[str, Path], capsys) -> None:  # noqa: ANN001
    torch.manual_seed(0)
    opt = AutoModelForCausalLM.from_config(OPTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                                    ffn_dim=32, vocab_size=VOCAB, word_embed_proj_dim=16))
    opt.save_pretrained(setup["root"] / "opt")
    tiny_tokenizer().save_pretrained(setup["root"] / "opt")
    assert main(["prune", str(setup["root"] / "opt"), "--sparsity", "0.5", "--out", str(setup["root"] / "o")]) == 2
    err = capsys.readouterr().err
    assert "gpt2, gpt_neox, llama" in err
    assert not (setup["root"] / "o").exists()


def test_parse_count() -> None:
    assert parse_count("45M") == 45_000_000
    assert parse_count("1.5e6") == 1_500_000
    assert parse_count("2k") == 2000
    assert parse_count("2,000,000") == 2_000_000 and parse_count("2.9B") == 2_900_000_000


def test_data_free_baseline_scorer(setup: dict[str, Path]) -> None:
    assert _run(setup, "mag", "--sparsity", "0.5", "--scorer", "magnitude", "--allocation", "uniform") == 0
    report = json.loads((setup["root"] / "mag" / "prune_report.json").read_text())
    assert report["scores_from"].startswith("magnitude") and report["calibration_tokens"] == 0
    assert report["method"] == "magnitude" and report["scoring"]["calibration"] == "none"
    assert report["export"] == {"format": "vanilla"}


def test_a_global_student_converts_to_a_checkpoint_plain_transformers_loads(setup: dict[str, Path], capsys) -> None:  # noqa: ANN001
    assert _run(setup, "g50", "--sparsity", "0.5") == 0
    src, dst = setup["root"] / "g50", setup["root"] / "g50-vanilla"
    with pytest.raises(OSError):  # per-layer shapes: what a user meets without the converter
        AutoModelForCausalLM.from_pretrained(src)
    assert main(["convert", "pruned", str(src), "--out", str(dst)]) == 0
    assert "AutoModelForCausalLM.from_pretrained" in capsys.readouterr().out
    plain = AutoModelForCausalLM.from_pretrained(dst).eval()
    pruned, _ = load_pruned(src)
    ids = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(plain(ids).logits, pruned.eval()(ids).logits, atol=1e-5, rtol=1e-5)
    assert main(["convert", "pruned", str(dst), "--out", str(setup["root"] / "again")]) == 2
    assert "loads with AutoModelForCausalLM" in capsys.readouterr().err


def test_help_names_every_method(capsys) -> None:  # noqa: ANN001
    from capgap.prune.methods import METHODS

    with pytest.raises(SystemExit):
        main(["prune", "--help"])
    out = capsys.readouterr().out
    lines = {line.split()[0] for line in out.splitlines() if line.startswith("  ") and line.split()}
    assert set(METHODS) <= lines


def test_methods_from_the_command_line_and_their_saved_scores(setup: dict[str, Path], capsys) -> None:  # noqa: ANN001
    assert _run(setup, "act", "--sparsity", "0.5", "--method", "activation", "--allocation", "uniform") == 0
    report = json.loads((setup["root"] / "act" / "prune_report.json").read_text())
    assert report["method"] == "activation" and report["scoring"]["calibration"] == "forward"
    assert report["scoring"]["calibration_tokens"] == 256 and report["scoring"]["seconds"] > 0
    assert _run(setup, "bi", "--sparsity", "0.3", "--method", "block_influence") == 0
    bi = json.loads((setup["root"] / "bi" / "prune_report.json").read_text())
    assert bi["method"] == "block_influence" and bi["hidden_kept"] == bi["hidden_before"]
    assert len(bi["layers_kept"]) < bi["layers_before"] and bi["export"] == {"format": "vanilla"}
    saved = str(setup["root"] / "bi" / "scores")
    assert _run(setup, "bi2", "--sparsity", "0.5", "--scores", saved) == 0  # depth-only from its saved scores
    assert json.loads((setup["root"] / "bi2" / "prune_report.json").read_text())["hidden_kept"] == bi["hidden_kept"]
    capsys.readouterr()
    assert _run(setup, "bad", "--sparsity", "0.5", "--scores", saved, "--method", "taylor") == 2
    assert "made by block_influence, not taylor" in capsys.readouterr().err
    assert not (setup["root"] / "bad").exists()
