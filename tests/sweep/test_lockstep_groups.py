"""How a sweep groups its cells for lockstep training, and how a group's time is shared."""

from __future__ import annotations

import dataclasses
import types

from capgap.sweep.cell import _shares
from capgap.sweep.runner import lockstep_groups


def _grid() -> dict[str, types.SimpleNamespace]:
    grid = {}
    for seed in (0, 1):
        for tokens in (500_000, 1_000_000):
            for params in (2e5, 4e5):
                for student in ("a", "b"):
                    key = f"{seed}-{tokens}-{params:g}-{student}"
                    grid[key] = types.SimpleNamespace(
                        seed=seed, tokens=tokens,
                        teacher=types.SimpleNamespace(path=f"t{params:g}", params=params))
    return grid


def test_budgets_share_a_group_unless_kept_apart(sweep_cfg) -> None:
    grid = _grid()
    together = lockstep_groups(sweep_cfg, grid, list(grid))
    assert sweep_cfg.lockstep_budgets and sorted(map(len, together)) == [4, 4, 4, 4]
    for g in together:  # one teacher and seed, both budgets
        assert len({(grid[k].seed, grid[k].teacher.params) for k in g}) == 1
        assert {grid[k].tokens for k in g} == {500_000, 1_000_000}
    assert [(grid[g[0]].seed, grid[g[0]].teacher.params) for g in together] == [
        (0, 4e5), (0, 2e5), (1, 4e5), (1, 2e5)]  # seed by seed, largest teacher first
    apart = lockstep_groups(dataclasses.replace(sweep_cfg, lockstep_budgets=False), grid,
                            list(grid))
    assert sorted(map(len, apart)) == [2] * 8
    assert [grid[g[0]].tokens for g in apart][:2] == [500_000, 500_000]  # smallest budget first


def test_group_time_is_shared_by_budget() -> None:
    assert _shares(9.0, [1e6, 2e6]) == [3.0, 6.0]
    assert _shares(4.0, [5e5, 5e5]) == [2.0, 2.0]
