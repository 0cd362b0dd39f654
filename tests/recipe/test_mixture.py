"""Data mixtures: token shares follow the weights, batches follow them too, seeds fix them."""

from __future__ import annotations

import numpy as np
import pytest

from capgap.data import PackedLoader, TokenStore, load_corpus
from capgap.errors import CapgapError
from capgap.recipe.mixture import (
    MIXTURE_FILE,
    MixtureSource,
    mixture_corpus,
    normalised_weights,
    read_meta,
)


@pytest.fixture(scope="module")
def sources(tiny_corpus, tmp_path_factory):
    """Two corpora told apart by case: 'lower' (~110 KB) and 'upper' (~55 KB)."""
    root = tmp_path_factory.mktemp("mix")
    docs = [d.text for d in tiny_corpus.documents]
    (root / "lower.txt").write_text("\n\n".join(docs).lower())
    (root / "upper.txt").write_text("\n\n".join(docs[: len(docs) // 2]).upper())
    return str(root / "lower.txt"), str(root / "upper.txt")


def mix(sources, w_lower: float, w_upper: float) -> list[MixtureSource]:
    return [MixtureSource(sources[0], w_lower), MixtureSource(sources[1], w_upper)]


def test_token_shares_and_batches_follow_the_weights(sources, tiny_tokenizer, tmp_path):
    path = mixture_corpus(mix(sources, 3, 1), tiny_tokenizer, tokens=30_000, cache=tmp_path)
    meta = read_meta(path)
    shares = [s["realised_share"] for s in meta["sources"]]
    assert shares == pytest.approx([0.75, 0.25], abs=0.03)  # whole ~2 KB pieces
    assert meta["tokens"] == pytest.approx(30_000, rel=0.05) and not meta["limited_by_source"]
    # What the distillation engine sees: uniform windows of the mixture's token stream.
    store = TokenStore.build_or_load(load_corpus(path), tiny_tokenizer, cache=tmp_path)
    loader = PackedLoader(store.train, seq_len=32, batch_size=8, seed=0)
    rows = np.concatenate([loader.batch(s).numpy() for s in range(40)])  # 320 windows
    upper = [sum(c.isupper() for c in t) > sum(c.islower() for c in t)
             for t in tiny_tokenizer.batch_decode(rows)]
    assert np.mean(upper) == pytest.approx(0.25, abs=0.09)  # ~3.7 binomial sd


def test_deterministic_by_seed(sources, tiny_tokenizer, tmp_path):
    def text(seed: int, cache: str) -> str:
        path = mixture_corpus(mix(sources, 1, 1), tiny_tokenizer, tokens=8_000, seed=seed,
                              cache=tmp_path / cache)
        return (tmp_path / cache / path).joinpath(MIXTURE_FILE).read_text()

    assert text(0, "a") == text(0, "b")  # rebuilt from scratch: the same corpus
    assert text(0, "a") != text(1, "a")  # another seed draws other pieces


def test_a_short_source_shrinks_the_mixture_not_its_share(sources, tiny_tokenizer, tmp_path):
    # 'upper' holds ~55 KB; asking for 90 % of 200k tokens from it cannot be met.
    meta = read_meta(mixture_corpus(mix(sources, 1, 9), tiny_tokenizer, tokens=200_000,
                                    cache=tmp_path))
    assert meta["limited_by_source"] and meta["tokens"] < 200_000
    assert [s["realised_share"] for s in meta["sources"]] == pytest.approx([0.1, 0.9], abs=0.03)


def test_single_source_is_passed_through(tiny_tokenizer):
    assert mixture_corpus([MixtureSource("default", 2.0)], tiny_tokenizer, 1000) == "default"
    assert mixture_corpus([MixtureSource("a.txt", 1), MixtureSource("b.txt", 0)],
                          tiny_tokenizer, 1000) == "a.txt"


@pytest.mark.parametrize("weights", [[0, 0], [1, -1], [float("nan"), 1], []])
def test_weights_must_sum_to_a_positive_number(weights):
    with pytest.raises(CapgapError, match="(sum to a positive number|at least one source)") as e:
        normalised_weights([MixtureSource("default", w) for w in weights])
    assert "\n" not in str(e.value)
