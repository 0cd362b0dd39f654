"""CUDA paths, checked against the CPU ones: distillation in bf16 autocast (the default on a
GPU), expressiveness scoring and a pretraining run. Skipped without CUDA; run them where a GPU
is lent with ``scripts/gpu-check``. Tolerances allow bf16 rounding, not a different loss."""

from __future__ import annotations

import pytest
import torch

from capgap.distill.engine import distill
from tests.distill.test_engine import cfg_for, save_tiny

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.fixture(scope="module")
def pair(tmp_path_factory, tiny_tokenizer, tiny_corpus):
    root = tmp_path_factory.mktemp("cuda")
    (root / "corpus.txt").write_text("\n\n".join(d.text for d in tiny_corpus.documents))
    return (save_tiny(root / "teacher", tiny_tokenizer, 64, 2, 0),
            save_tiny(root / "student", tiny_tokenizer, 32, 2, 1), root)


def test_distill_on_cuda_in_bf16_follows_the_fp32_cpu_run(pair, tmp_path):
    teacher, student, root = pair
    cpu_cfg = cfg_for(teacher, student, root / "corpus.txt")
    cpu_cfg.train.precision = "fp32"
    gpu_cfg = cfg_for(teacher, student, root / "corpus.txt")  # precision auto: bf16 on CUDA
    cpu = distill(cpu_cfg, tmp_path / "cpu", device="cpu")
    gpu = distill(gpu_cfg, tmp_path / "gpu")
    assert torch.isfinite(torch.tensor(gpu.val_loss))
    assert abs(gpu.val_loss - cpu.val_loss) < 0.05, (gpu.val_loss, cpu.val_loss)
    from safetensors.torch import load_file

    weights = load_file(next((tmp_path / "gpu" / "model").glob("*.safetensors")))
    assert {t.dtype for t in weights.values()} == {torch.float32}  # saved in full precision


def test_scores_on_cuda_match_the_cpu_ones(pair, tiny_token_store):
    from capgap.data import PackedLoader
    from capgap.models.anymodel import load_any_model
    from capgap.prune import score

    teacher, _, _ = pair
    calib = PackedLoader(tiny_token_store.train, seq_len=32, batch_size=4)
    batches = [calib.batch(i) for i in range(3)]
    cpu = score(load_any_model(teacher)[0].float(), batches)
    gpu = score(load_any_model(teacher)[0].float().cuda(), batches)
    for name in ("heads", "neurons", "hidden"):
        assert torch.allclose(getattr(gpu, name).cpu(), getattr(cpu, name), rtol=1e-3,
                              atol=1e-6), name


def test_pretraining_on_cuda_lowers_the_loss(tiny_tokenizer, tiny_token_store, tmp_path):
    assert pretrain_drop(tiny_tokenizer, tiny_token_store, tmp_path, "cuda") > 0.3  # CPU: 0.54


def pretrain_drop(tokenizer, store, tmp_path, device: str) -> float:  # noqa: ANN001
    """How much 40 steps of a tiny GPT-NeoX on ``device`` lower its held-out loss."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from capgap.data import PackedLoader
    from capgap.runs import RunDir
    from capgap.train.loop import TrainConfig, train
    from capgap.train.loss import mean_lm_loss
    from capgap.train.pretrain import lm_step

    torch.manual_seed(0)
    model = GPTNeoXForCausalLM(GPTNeoXConfig(
        vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=256, max_position_embeddings=64)).to(device)
    loader = PackedLoader(store.train, seq_len=32, batch_size=16)
    val = [loader.batch(i) for i in range(2)]
    before = mean_lm_loss(model, val, torch.device(device))
    result = train(model, loader, lm_step, TrainConfig(tokens=32 * 16 * 40, micro_batch_size=16,
                                                       threads=1), RunDir.open(tmp_path / "run"))
    return before - mean_lm_loss(result.model, val, torch.device(device))
