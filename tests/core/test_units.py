"""One reader of sizes and counts for every flag and config: suffixes, separators, errors."""

from __future__ import annotations

import pytest

from capgap.cli import main
from capgap.errors import CapgapError
from capgap.units import format_size, parse_count, parse_size, parse_sizes


@pytest.mark.parametrize(("text", "value"), [
    ("124M", 124e6), ("1.5b", 1.5e9), ("300k", 3e5), ("2.5e6", 2.5e6), ("2,000,000", 2e6),
    ("1_000", 1e3), ("7G", 7e9), ("1T", 1e12), (3e9, 3e9), (42, 42.0),
])
def test_sizes_read_alike_everywhere(text, value) -> None:
    assert parse_size(text) == value


def test_counts_are_whole_and_lists_split_on_commas() -> None:
    assert parse_count("2.9B") == 2_900_000_000 and isinstance(parse_count("1k"), int)
    assert parse_sizes("124M, 355M,1.5B") == [124e6, 355e6, 1.5e9]
    assert format_size(1.5e9) == "1.5B" and format_size(None) == "n/a"


@pytest.mark.parametrize("text", ["lots", "", "-3M", "0", "inf"])
def test_bad_sizes_are_one_line_errors(text) -> None:
    with pytest.raises(CapgapError, match="size"):
        parse_size(text)


def test_a_bad_count_flag_is_refused_by_argparse_in_one_line(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["prune", str(tmp_path), "--target-params", "lots", "--out", str(tmp_path / "o")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--target-params: not a size: 'lots'" in err and "Traceback" not in err
