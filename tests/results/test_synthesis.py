"""The study's cross-part synthesis, on hand-made rows whose answers are known: the optimum and
its censoring per group, gains over the right baseline (the control's is the baseline of the
teacher it was cut from), cells shared by two parts counted once, noise borrowed from the
own-pruned seeds when the control has one seed."""

from __future__ import annotations

import pytest

from capgap.report.study import summary_markdown
from capgap.report.synthesis import budget_figure, penalty_figure
from capgap.results.findings import findings, hypotheses
from capgap.results.synthesis import (
    budget_rows,
    control_rows,
    optimum_table,
    pooled_rows,
    scratch_rows,
    synthesis,
    tag_rows,
)

TEACHERS = {"T0": 600_000, "T1": 1_200_000, "T2": 1_800_000, "T3": 3_300_000}


def row(teacher: str, loss: float, *, seed: int = 0, alpha: float = 0.5, tokens: int = 1000,
        cut: str | None = None, objective: str = "soft_ce", key: str | None = None) -> dict:
    cut = cut or teacher
    return {"key": key or f"{teacher}-{cut}-{seed}-{alpha}-{tokens}-{objective}",
            "status": "done", "teacher": teacher, "teacher_params": TEACHERS[teacher],
            "student_target": 300_000, "student_params": 301_000, "alpha": alpha,
            "objective": objective if alpha < 1 else "ce", "allocation": "global",
            "init": "pruned", "tokens": tokens, "seed": seed, "val_loss": loss,
            "pruned_from": cut}


def paper_rows(tokens: int, losses: dict[str, float], seeds: int = 1) -> list[dict]:
    out = []
    for s in range(seeds):
        for t, loss in losses.items():
            out.append(row(t, loss + 0.001 * s, seed=s, tokens=tokens))
            out.append(row(t, loss + 0.05 + 0.001 * s, seed=s, tokens=tokens, alpha=1.0))
    return out


def variant_rows(losses: dict[str, float], baseline_gap: float, **change: str) -> list[dict]:
    """Distilled cells and their baselines (``baseline_gap`` worse) of another setting."""
    out = []
    for t, loss in losses.items():
        for alpha, x in ((0.5, loss), (1.0, loss + baseline_gap)):
            r = row(t, x, alpha=alpha)
            out.append(r | change | {"key": r["key"] + "-" + "-".join(change.values())})
    return out


def test_optimum_is_the_seed_mean_argmin_with_its_edge_and_margin():
    rows = tag_rows(paper_rows(1000, {"T0": 5.00, "T1": 5.02, "T2": 5.05})
                    + paper_rows(9000, {"T0": 4.60, "T1": 4.55, "T2": 4.58}, seeds=3),
                    "p", "fam")
    table = {g["tokens"]: g for g in optimum_table(rows)}
    assert table[1000]["best"] == "T0" and table[1000]["censored"] == "low"
    assert table[1000]["noise"] == pytest.approx(0.004) and not table[1000]["noise_measured"]
    mid = table[9000]
    assert mid["best"] == "T1" and mid["censored"] is None
    assert mid["ratio"] == pytest.approx(1_200_000 / 300_000)
    assert mid["margin_vs_smallest"] == pytest.approx(0.05)
    assert mid["seeds"] == [0, 1, 2] and mid["noise_measured"]
    assert mid["gain"] == pytest.approx([0.05, 0.05, 0.05])  # each over its own baseline
    assert mid["best_gain"] == "T0" and mid["best_gain_edge"] == "low"  # ties: smaller
    assert [g["tokens"] for g in budget_rows(list(table.values()), "fam", "soft_ce")] == [
        1000, 9000]
    assert budget_rows(list(table.values()), "other", "soft_ce") == []


def test_control_gains_are_over_the_baseline_of_the_teacher_it_was_cut_from():
    paper = paper_rows(1000, {"T0": 5.00, "T1": 4.90, "T2": 4.95, "T3": 5.10}, seeds=2)
    control = [row("T0", 5.00, cut="T0", key="T0-T0-0-0.5-1000-soft_ce"),  # the same cell
               row("T1", 4.97, cut="T0"), row("T2", 4.93, cut="T0"), row("T3", 4.99, cut="T0")]
    rows = tag_rows(paper, "paper", "fam") + tag_rows(control, "control", "fam", "T0")
    table = optimum_table(rows)
    groups = {g["source"]: g for g in table}
    assert set(groups) == {"own", "from T0"}
    ctrl = groups["from T0"]
    assert ctrl["teachers"] == ["T0", "T1", "T2", "T3"] and ctrl["best"] == "T2"
    t0_baseline = 5.05
    assert ctrl["gain"] == pytest.approx([t0_baseline - x for x in (5.00, 4.97, 4.93, 4.99)])
    assert ctrl["best_gain"] == "T2" and ctrl["best_gain_edge"] is None
    (c,) = control_rows(table, rows)
    assert c["cut_from"] == "T0" and c["seeds"] == [0]
    assert c["own_best"] == "T1" and not c["same_best"]
    by_t = {t["teacher"]: t for t in c["teachers"]}
    assert by_t["T1"]["own_loss"] == pytest.approx(4.90)  # seed 0 only, as in the control
    assert by_t["T1"]["own_gain"] == pytest.approx(0.05)
    assert c["spread"] == pytest.approx(0.07)
    assert c["noise"] == pytest.approx(0.004)  # own seeds differ by 0.001 -> the floor wins
    assert c["teacher_effect"]
    assert sum(1 for r in rows if r["key"] == "T0-T0-0-0.5-1000-soft_ce") == 2
    assert optimum_table(rows + rows) == table  # a part read twice changes nothing
    assert len([g for g in table if g["source"] == "own"][0]["seeds"]) == 2


def test_pooled_findings_borrow_baselines_from_the_part_that_ran_them():
    paper = paper_rows(1000, {"T0": 5.00, "T1": 4.90, "T2": 4.95})  # soft CE + baselines
    rkl = [row(t, x, objective="reverse_kl") for t, x in {"T0": 5.04, "T1": 4.93,
                                                         "T2": 5.02}.items()]
    rows = tag_rows(paper, "budgets", "fam") + tag_rows(rkl, "objectives", "fam")
    match = {"family": "fam", "objective": "reverse_kl", "allocation": "global", "tokens": 1000}
    assert {r["alpha"] for r in pooled_rows(rows, **match)} == {0.5}  # a law's input
    paired = pooled_rows(rows, baselines=True, **match)
    assert sorted(r["objective"] for r in paired) == ["ce"] * 3 + ["reverse_kl"] * 3
    where = {"objective": "reverse_kl", "allocation": "global", "init": "pruned",
             "tokens": 1000}
    (size,) = findings(paired, None, where)["h1"]["sizes"]
    assert size["gain"] == pytest.approx([0.01, 0.02, -0.02])  # baselines 5.05, 4.95, 5.00
    assert size["teacher_effect"] and size["gain_spread"] == pytest.approx(0.04)
    alone = findings(pooled_rows(rows, **match), None, where)
    assert hypotheses(alone)["teacher_effect"] == [0, 0]  # no baselines, no effect to judge
    assert hypotheses(findings(paired, None, where))["teacher_effect"] == [1, 1]


def test_scratch_students_sit_beside_the_pruned_ones_over_their_own_baselines():
    paper = paper_rows(1000, {"T0": 5.00, "T1": 4.90, "T2": 4.95})
    scratch = variant_rows({"T0": 6.30, "T1": 6.20, "T2": 6.10}, 0.1, init="scratch")
    rows = tag_rows(paper + scratch, "p", "fam")
    table = optimum_table(rows)
    (c,) = scratch_rows(table, rows)
    assert c["init"] == "scratch" and c["best"] == "T2" and c["censored"] == "high"
    assert c["label"].startswith("scratch init")
    by_t = {t["teacher"]: t for t in c["teachers"]}
    assert by_t["T1"]["control_loss"] == pytest.approx(6.20)
    assert by_t["T1"]["control_gain"] == pytest.approx(0.1)  # over the scratch baseline
    assert by_t["T1"]["own_loss"] == pytest.approx(4.90)
    assert by_t["T1"]["own_gain"] == pytest.approx(0.05)  # over the pruned baseline
    assert c["own_best"] == "T1" and not c["same_best"]
    assert control_rows(table, rows) == []  # scratch is no same-init control
    assert "Scratch-initialised students" in summary_markdown(
        {"parts": {}, "synthesis": synthesis(rows, "fam", "soft_ce")})


def test_summary_and_figure_are_written_from_the_synthesis(tmp_path):
    rows = tag_rows(paper_rows(1000, {"T0": 5.0, "T1": 4.9, "T2": 5.1})
                    + paper_rows(4000, {"T0": 4.8, "T1": 4.7, "T2": 4.6}), "p", "fam")
    syn = synthesis(rows, "fam", "soft_ce")
    record = {"parts": {"p": {"status_counts": {"done": 12}, "busy_s": 3600.0,
                              "laws": {"total": {"status": "insufficient", "reason": "r"}}}},
              "synthesis": syn}
    text = summary_markdown(record)
    assert "| p | 12 done | 0.00 h | 1.00 h | total: insufficient — r |" in text
    assert "best T1 (1.2M, 4.00x), inside the range" in text
    assert "best T2 (1.8M, 6.00x), censored at the high edge" in text
    assert "S 0.3M, 1,000 tok, vs T0: T1 -0.100, T2 +0.100" in text  # the penalty per budget
    assert "S 0.3M, 4,000 tok, vs T0: T1 -0.100, T2 -0.200" in text
    assert budget_figure(syn["budget"], tmp_path / "b.png")
    assert (tmp_path / "b.png").stat().st_size > 1000
    brackets = {g["tokens"]: [1.5, None] for g in syn["budget"]}  # unbounded above too
    assert budget_figure(syn["budget"], tmp_path / "c.png", brackets)
    assert not budget_figure([], tmp_path / "none.png") and not (tmp_path / "none.png").exists()
    assert penalty_figure(syn["budget"], tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 1000
    assert not penalty_figure([], tmp_path / "none.png") and not (tmp_path / "none.png").exists()


def test_busy_time_merges_parallel_cells_and_skips_gaps_between_runs():
    from capgap.results.accounting import busy_seconds

    def cell(end: str, seconds: float, status: str = "done") -> dict:
        return {"status": status, "updated": f"2026-11-29T{end}", "prune_s": 1.0,
                "distill_s": seconds - 1.0}

    rows = [cell("10:10:00", 600), cell("10:05:00", 600),  # two workers: 09:55-10:10
            cell("12:01:00", 60),                            # a later run, after a gap
            cell("12:30:00", 999, status="failed")]          # not counted
    assert busy_seconds(rows) == 900 + 60
    assert busy_seconds([]) == 0
    # a lockstep group of 4 members finishing together split its 400 s (+1 s of pruning)
    group = [cell("14:00:00", 101) | {"teacher_path": "T2", "seed": 0} for _ in range(4)]
    assert busy_seconds(group) == 401
    other = cell("14:00:00", 101) | {"teacher_path": "T3", "seed": 0}  # another worker's group
    assert busy_seconds([*group, other]) == 401
    split = [cell(end, 101) | {"teacher_path": "T2", "seed": 0}  # stamped across a second
             for end in ("14:00:00", "14:00:00", "14:00:01", "14:00:01")]
    assert busy_seconds(split) == 401
    # two single cells of one teacher and seed finishing together on two workers: their own
    # tasks keep them apart where the rows say so
    alone = [cell("15:00:00", 101) | {"teacher_path": "T2", "seed": 0, "task": f"group:{k}"}
             for k in ("a", "b")]
    assert busy_seconds(alone) == 101


def test_glance_rows_pair_both_units_of_a_budget_with_their_brackets():
    from capgap.report.study import glance_rows

    def law(unit: str, common: list | None, inside: bool | None, **extra) -> dict:
        return {"family": "fam", "objective": "soft_ce", "allocation": "global",
                "tokens": 2_000_000, "unit": unit, "seeds": [0, 1], "status": "insufficient",
                "n_points": 1, "bracket": {"n_sizes": 3, "common": common,
                                           "reference_inside": inside}} | extra

    verdicts = {"h1": "yes", "teacher_effect": [2, 3], "h2": "partly", "interior": [1, 3],
                "resolved": 0, "h3": "not rejected"}
    (row,) = glance_rows([law("total", [1.25, 3.68], True, hypotheses=verdicts),
                          law("non_embedding", None, None)])
    assert row == ["fam", "soft_ce", "2,000,000", "0,1", "yes; own effect in 2 of 3",
                   "1 of 3 (0 beyond noise)",
                   "not rejected", "insufficient", "(1.25, 3.68)x (inside)", "no single ratio"]
    (half,) = glance_rows([law("total", [1.25, 3.68], True,
                               seeds_used={"300000": [0, 1], "500000": [0]})])
    assert half[3] == "0,1 (all in 1 of 2 sizes)"  # seed 1 still landing for 0.5M
    (fit,) = glance_rows([law("total", [2.0, None], None, status="ok", ratio=2.4,
                              ratio_ci=[2.1, 2.9], n_points=3)])  # a record without verdicts
    assert fit[4:] == ["-", "3 of 3", "-", "T* = 2.4·S [2.1, 2.9]", "(2.00, inf)x", "-"]


def test_left_seconds_prices_each_unfinished_cell_like_its_nearest_finished_ones():
    from capgap.results.accounting import left_seconds

    def cell(status: str, teacher: int, alpha: float, tokens: int, seconds: float = 0.0):
        return {"status": status, "teacher_params": teacher, "student_target": 300_000,
                "alpha": alpha, "tokens": tokens, "distill_s": seconds, "prune_s": 0.0}

    done = [cell("done", 1, 0.5, 1000, 10.0), cell("done", 2, 0.5, 1000, 40.0),
            cell("done", 1, 1.0, 1000, 2.0)]
    assert left_seconds([cell("pending", 1, 0.5, 2000)], done) == pytest.approx(20.0)
    assert left_seconds([cell("running", 1, 1.0, 500)], done) == pytest.approx(1.0)
    # an unseen teacher: every finished distilled cell's rate, (10 + 40) / 2000 tokens
    assert left_seconds([cell("pending", 3, 0.5, 2000)], done) == pytest.approx(50.0)
    assert left_seconds(done, done) == 0.0 and left_seconds([cell("pending", 1, 0.5, 10)], []) == 0


def test_objectives_are_set_side_by_side_only_where_a_budget_has_several(tmp_path):
    from capgap.report.synthesis import objectives_figure
    from capgap.results.synthesis import objective_rows

    rows = paper_rows(1000, {"T0": 5.0, "T1": 4.9}) + paper_rows(4000, {"T0": 4.8, "T1": 4.7})
    rows += [row(t, loss, objective="jsd") for t, loss in (("T0", 5.02), ("T1", 5.04))]
    table = optimum_table(tag_rows(rows, "p", "fam"))
    groups = objective_rows(table, "fam")
    assert [(g["tokens"], g["objective"]) for g in groups] == [(1000, "jsd"), (1000, "soft_ce")]
    jsd = groups[0]
    assert jsd["best"] == "T0" and jsd["gain"] == pytest.approx([0.03, -0.09])  # soft CE baselines
    assert objective_rows(table, "other") == []
    assert objectives_figure(groups, tmp_path / "o.png")
    assert (tmp_path / "o.png").stat().st_size > 1000
    assert not objectives_figure([], tmp_path / "none.png")


def test_another_allocation_sits_beside_the_studys_over_its_own_baselines(tmp_path):
    from capgap.report.study import glance_rows
    from capgap.report.synthesis import control_figure
    from capgap.results.synthesis import allocation_rows

    paper = paper_rows(1000, {"T0": 5.00, "T1": 4.90, "T2": 4.95})
    uniform = variant_rows({"T0": 5.10, "T1": 5.05, "T2": 4.98}, 0.2, allocation="uniform")
    rows = tag_rows(paper + uniform, "p", "fam")
    table = optimum_table(rows)
    (c,) = allocation_rows(table, rows, "global")
    assert c["allocation"] == "uniform" and c["best"] == "T2" and c["censored"] == "high"
    by_t = {t["teacher"]: t for t in c["teachers"]}
    assert by_t["T1"]["control_loss"] == pytest.approx(5.05)
    assert by_t["T1"]["control_gain"] == pytest.approx(0.2)  # over the uniform baseline
    assert by_t["T1"]["own_loss"] == pytest.approx(4.90)  # the global student
    assert by_t["T1"]["own_gain"] == pytest.approx(0.05)
    assert c["own_best"] == "T1" and not c["same_best"]
    assert allocation_rows(table, rows, "uniform")[0]["allocation"] == "global"
    syn = synthesis(rows, "fam", "soft_ce", "global")
    assert [g["allocation"] for g in syn["budget"]] == ["global"]  # the other is beside it
    assert "Pruning allocation" in summary_markdown({"parts": {}, "synthesis": syn})
    assert control_figure(syn["allocation"], tmp_path / "a.png")
    laws = [{"family": "fam", "objective": "soft_ce", "allocation": a, "tokens": 1000,
             "unit": "total", "status": "insufficient"} for a in ("global", "uniform")]
    assert [r[1] for r in glance_rows(laws)] == ["soft_ce (global)", "soft_ce (uniform)"]
    assert glance_rows(laws[:1])[0][1] == "soft_ce"


def test_a_control_that_ran_its_own_baselines_does_not_replace_the_papers():
    """Each control baseline (teacher Ti, student cut from T0) is the T0-cut student trained
    alone (the same loss as the paper's T0 baseline): it pairs with the control's cells,
    never with the student pruned from Ti."""
    paper = paper_rows(1000, {"T0": 5.00, "T1": 4.90, "T2": 4.95})  # baselines 0.05 worse
    control = [row(t, x, cut="T0", alpha=a) for t, x0 in {"T1": 4.97, "T2": 4.93}.items()
               for a, x in ((0.5, x0), (1.0, 5.05))]
    rows = tag_rows(paper, "paper", "fam") + tag_rows(control, "control", "fam", "T0")
    match = {"family": "fam", "objective": "soft_ce", "allocation": "global", "tokens": 1000}
    where = {"objective": "soft_ce", "allocation": "global", "init": "pruned", "tokens": 1000}
    (size,) = findings(pooled_rows(rows, baselines=True, **match), None, where)["h1"]["sizes"]
    assert size["gain"] == pytest.approx([0.05, 0.05, 0.05])
    own = next(g for g in optimum_table(rows) if g["source"] == "own")
    assert own["gain"] == pytest.approx([0.05, 0.05, 0.05])


def test_teachers_are_compared_on_the_seeds_they_all_have():
    """While seeds are filling in, T0 has a second (luckier) seed the others lack: the best
    teacher and the loss are judged on seed 0 alone, which every teacher has."""
    rows = paper_rows(1000, {"T0": 5.00, "T1": 4.99, "T2": 5.05})
    rows += [row("T0", 4.97, seed=1), row("T0", 5.02, seed=1, alpha=1.0)]
    tagged = tag_rows(rows, "p", "fam")
    (g,) = optimum_table(tagged)
    assert g["seeds"] == [0] and g["best"] == "T1" and g["loss"][0] == pytest.approx(5.00)
    where = {"objective": "soft_ce", "allocation": "global", "init": "pruned", "tokens": 1000}
    (size,) = findings(tagged, None, where)["h1"]["sizes"]
    assert size["loss"][0] == pytest.approx(5.00) and size["seed_sd"] == [0.0, 0.0, 0.0]
