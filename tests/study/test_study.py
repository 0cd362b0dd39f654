"""A study: parts share one pretrained family, each part is a resumable sweep, the summary
records every part's laws (total and non-embedding), and bad parts are refused up front."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import yaml

from capgap import config
from capgap.cli import main
from capgap.errors import CapgapError
from capgap.results.rows import CellRow
from capgap.results.store import read_rows
from capgap.study import StudyConfig, family_key, run_study

pytestmark = pytest.mark.slow


def _study(sweep_root) -> StudyConfig:
    base = yaml.safe_load((sweep_root / "sweep.yaml").read_text())
    return config.from_dict(StudyConfig, {"base": base, "parts": {
        "paper": {},
        "control": {"students": {"prune_from": "A"}, "baseline": False},
    }})


def test_parts_share_teachers_and_record_their_laws(sweep_root, tmp_path, capsys):
    cfg = _study(sweep_root)
    out = tmp_path / "study"
    record = run_study(cfg, out, progress=False)
    log = [line for line in capsys.readouterr().out.splitlines() if " ETA " in line]
    assert log and log[-1].startswith("[") and "val " in log[-1]  # a line per cell, no bars
    key = family_key(cfg.sweep("paper"))
    assert key == family_key(cfg.sweep("control"))
    shared = out / "teachers" / key
    assert (shared / "DONE.json").is_file()
    for part in ("paper", "control"):
        assert (out / part / "teachers").resolve() == shared.resolve()
        assert (out / part / "law.json").is_file() and (out / part / "law_non_embedding.json").is_file()
        assert (out / part / "report" / "index.html").is_file()
        assert set(record["parts"][part]["laws"]) == {"total", "non_embedding"}
    control = read_rows(out / "control")
    assert {r["pruned_from"] for r in control} == {"A"}
    assert {r["teacher"] for r in control} == {"A", "B"} and {r["alpha"] for r in control} == {0.5}
    paper = {r["teacher"]: r for r in read_rows(out / "paper") if r["alpha"] < 1}
    by_teacher = {r["teacher"]: r for r in control}
    assert by_teacher["A"]["val_loss"] == paper["A"]["val_loss"]  # the same cell, twice
    assert by_teacher["B"]["student_params"] == paper["A"]["student_params"]
    # one student for both teachers: the same training and scoring FLOPs, a bigger forward
    assert by_teacher["B"]["student_flops"] == by_teacher["A"]["student_flops"]
    assert by_teacher["B"]["prune_flops"] == by_teacher["A"]["prune_flops"] > 0
    assert by_teacher["B"]["teacher_flops"] > by_teacher["A"]["teacher_flops"] > 0
    assert json.loads((out / "study.json").read_text())["parts"].keys() == {"paper", "control"}
    for part in ("paper", "control"):  # the regime travels with the part (published copies)
        assert (out / part / "regime.json").read_text() == (shared / "regime.json").read_text()
        regime = record["parts"][part]["regime"]
        assert regime["family"] == "family" and regime["teachers"] == len(
            json.loads((shared / "regime.json").read_text())["teachers"]) == 2
    summary = (out / "summary.md").read_text()
    assert summary.count("## Regime per teacher family") == 1
    assert "family (paper, control): regime: micro - 2 teachers" in summary
    assert "control/report/index.html" in (out / "index.html").read_text()
    (ctrl,) = record["synthesis"]["control"]
    assert ctrl["cut_from"] == "A" and [t["teacher"] for t in ctrl["teachers"]] == ["A", "B"]
    assert ctrl["teachers"][0]["own_loss"] == paper["A"]["val_loss"]
    assert (out / "summary.md").read_text().count("## Same-init control") == 1
    assert "![Same-init control](control.png)" in (out / "summary.md").read_text()
    assert (out / "control.png").stat().st_size > 1000 and "control.png" in (
        out / "index.html").read_text()
    for figure in ("optimum_vs_budget.png", "loss_vs_teacher.png"):  # the paper's setting
        assert (out / figure).stat().st_size > 1000 and figure in (out / "summary.md").read_text()
    assert "## Loss against compute, pooled over parts" in (out / "summary.md").read_text()
    series = json.loads((out / "loss_vs_flops.json").read_text())["series"]
    assert series and not any(s["baseline"] for s in series)  # the paper's setting only
    points = sorted((p["teacher"], p["total_flops"]) for s in series for p in s["points"])
    own = sorted((t, paper[t]["total_flops"]) for t in paper)  # control's cut-from-A left out
    assert points == own
    assert record["compute_s"]["teacher pretraining"] > 0 and record["compute_s"]["cells"] > 0
    teachers_once = record["parts"]["paper"]["compute_s"]["teacher pretraining"]
    assert record["compute_s"]["teacher pretraining"] == teachers_once  # shared, counted once
    pooled = {law["unit"]: law for law in record["synthesis"]["laws"]}
    assert set(pooled) == {"total", "non_embedding"} and pooled["total"]["parts"] == ["paper"]
    assert pooled["total"]["hypotheses"]["h1"] in ("yes", "partly", "no")
    (found,) = record["synthesis"]["findings"]
    assert found["family"] == "family" and found["h1"]["sizes"][0]["gain"][0] is not None
    assert "## H1-H3 per budget, pooled over parts" in (out / "summary.md").read_text()
    own = json.loads((out / "paper" / "law.json").read_text())
    again_fit = json.loads((out / pooled["total"]["file"]).read_text())
    assert again_fit.get("sizes") == own.get("sizes")  # one part pooled = that part's own fit
    stamps = {p: (out / p / "findings.json").stat().st_mtime_ns for p in ("paper", "control")}
    (out / "study.json").unlink()
    again = run_study(cfg, out, progress=False)
    assert all(p["ran"] == 0 for p in again["parts"].values())
    # a resume that finds every part done refits no part and publishes the study once
    assert {p: (out / p / "findings.json").stat().st_mtime_ns for p in stamps} == stamps
    assert (out / "study.json").is_file()
    before = {p: read_rows(out / p) for p in ("paper", "control")}
    for name in ("index.html", "summary.md", "study.json"):
        (out / name).unlink()
    (out / "paper" / "law.json").unlink()
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(config.to_dict(cfg)))
    capsys.readouterr()
    assert main(["study", "--config", str(path), "--out", str(out), "--report"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("paper: ") and ("T*/S in (" in line or "T* = " in line)
               for line in lines), lines  # the law, or the bracket when there is none
    assert (out / "paper" / "law.json").is_file() and (out / "summary.md").is_file()
    assert json.loads((out / "study.json").read_text())["synthesis"]["control"] == \
        record["synthesis"]["control"]
    assert {p: read_rows(out / p) for p in ("paper", "control")} == before  # nothing trained
    (out / "control" / "teachers").unlink()  # as published: no teachers, the copied regime.json
    (out / "control" / "regime.json").unlink()  # and even without it, study.json's record
    assert main(["study", "--config", str(path), "--out", str(out), "--report"]) == 0
    assert json.loads((out / "study.json").read_text())["parts"]["control"]["regime"] == \
        record["parts"]["control"]["regime"]


def test_bad_parts_are_refused_before_anything_runs(sweep_root, tmp_path, capsys):
    base = yaml.safe_load((sweep_root / "sweep.yaml").read_text())
    with pytest.raises(CapgapError, match="parts.bad: tokens: give positive"):
        config.from_dict(StudyConfig, {"base": base, "parts": {"bad": {"tokens": [-1]}}})
    with pytest.raises(CapgapError, match="parts.typo: unknown key 'tokns'"):
        config.from_dict(StudyConfig, {"base": base, "parts": {"typo": {"tokns": [1]}}})
    with pytest.raises(CapgapError, match="give at least one part"):
        config.from_dict(StudyConfig, {"base": base, "parts": {}})
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({"base": base, "parts": {"a": {}}}))
    assert main(["study", "--config", str(path), "--out", str(tmp_path / "o"),
                 "--only", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no part 'nope'" in err[0]
    assert not (tmp_path / "o").exists()
    assert main(["study", "--config", str(path), "--out", str(tmp_path / "o"), "--report"]) == 2
    assert "no study folder" in capsys.readouterr().err


def test_default_folder_is_under_runs_not_the_tracked_results(sweep_root, tmp_path,
                                                              monkeypatch, capsys):
    base = yaml.safe_load((sweep_root / "sweep.yaml").read_text())
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({"base": base, "parts": {"a": {}}}))
    monkeypatch.chdir(tmp_path)
    assert main(["study", "--config", str(path), "--report"]) == 2
    assert "runs/study: no study folder" in capsys.readouterr().err


def test_parts_pool_a_family_only_when_they_share_its_teachers(sweep_root):
    from capgap.study.runner import _family_names

    base = yaml.safe_load((sweep_root / "sweep.yaml").read_text())
    longer = {"teachers": {"pretrain": {"train": {"tokens": 16384}}}}
    cfg = config.from_dict(StudyConfig, {"base": base, "parts": {
        "a": {}, "b": {"tokens": [4096]}, "c": longer}})
    names = _family_names(cfg)
    assert names["a"] == names["b"] != names["c"]  # same teachers: one family, pooled
    held = config.from_dict(StudyConfig, {"base": base, "parts": {
        "a": {}, "b": {"tokens": [4096]}, "c": longer}, "holdout": {"hold_out": {"tokens": [4096]}}})
    assert held.holdout_parts() == ["a", "b"]  # the held-out law pools one family's teachers
    mixed = {"base": base, "parts": {"a": {}, "c": longer},
             "holdout": {"hold_out": {"tokens": [4096]}, "parts": ["a", "c"]}}
    with pytest.raises(CapgapError, match="one teacher family"):
        config.from_dict(StudyConfig, mixed)
    assert all(n.startswith("family-") for n in names.values())  # which family is which
    assert _family_names(config.from_dict(StudyConfig, {"base": base, "parts": {
        "a": {}, "b": {"tokens": [4096]}}})) == {"a": "family", "b": "family"}


def test_list_names_every_part_and_its_grid_without_running(sweep_root, tmp_path, capsys):
    base = yaml.safe_load((sweep_root / "sweep.yaml").read_text())
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({"base": base, "parts": {
        "a": {}, "u": {"students": {"allocations": ["uniform"]}}}}))
    assert main(["study", "--config", str(path), "--out", str(tmp_path / "o"), "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["a", "u"]
    assert lines[1].endswith("allocations ['uniform']") and not (tmp_path / "o").exists()


def test_seeds_used_are_those_every_teacher_of_a_size_has():
    from capgap.study.runner import _seeds_used

    def r(size: int, t: int, seed: int) -> CellRow:
        return CellRow(key=f"{size}-{t}-{seed}", student_target=size, teacher_params=t, seed=seed)

    rows = [r(3, 6, 0), r(3, 6, 1), r(3, 9, 0), r(3, 9, 1), r(5, 6, 0), r(5, 6, 1), r(5, 9, 0)]
    assert _seeds_used(rows) == {"3": [0, 1], "5": [0]}


def test_holdout_check_fits_the_kept_cells_and_predicts_the_rest(sweep_root, tmp_path):
    """The study's held-out check of the budget-aware law: the pooled parts' own-pruned
    cells split by value, the teachers' losses read from their family's regime.json."""
    from capgap.study.runner import holdout_check
    from tests.law.test_budget import SIZES, TEACHERS
    from tests.law.test_holdout import records

    raw = config.to_dict(_study(sweep_root)) | {"holdout": {"hold_out": {"tokens": [4e6]},
                                                             "parts": ["paper"], "bootstrap": 0}}
    cfg = config.from_dict(StudyConfig, raw)
    out = tmp_path / "study"
    rows = [CellRow(**r, objective="soft_ce" if r["alpha"] < 1 else "ce", allocation="global")
            for r in records(3)]
    waiting = holdout_check(cfg, {"paper": rows}, out)
    assert waiting["status"] == "waiting" and "no loss for teacher" in waiting["reason"]
    family = out / "teachers" / family_key(cfg.sweep("paper"))
    family.mkdir(parents=True)
    (family / "regime.json").write_text(json.dumps({"teachers": [
        {"name": t, "val_loss": float(v), "params": SIZES[t]} for t, v in TEACHERS.items()]}))
    got = holdout_check(cfg, {"paper": rows}, out)
    assert got["status"] == "ok" and got["argmin_within_noise"] == 1.0
    assert got["mae_nats"] < 0.01 and got["seed_noise_nats"] > 0
    saved = json.loads((out / "holdout.json").read_text())
    assert saved["parts"] == ["paper"] and saved["mae_nats"] == got["mae_nats"]
    assert (out / "budget_law.json").is_file() and (out / "regime.json").is_file()
    assert [s["tokens"] for s in got["slices"]].count(4e6) == len(got["slices"])
    from capgap.report.study import HOLDOUT_IMAGE, summary_markdown
    from capgap.report.synthesis import holdout_figure

    assert holdout_figure(saved, out / HOLDOUT_IMAGE) and not holdout_figure(None, out / "x.png")
    text = summary_markdown({"parts": {}, "holdout": got})
    assert "## The budget-aware law on cells it never saw" in text and "holdout.png" in text
    assert f"mae {got['mae_nats']:.4f} nats" in text
    assert "not yet: " in summary_markdown({"parts": {}, "holdout": waiting})
    published = tmp_path / "published"  # a copy without its teachers keeps their regime.json
    published.mkdir()
    (published / "regime.json").write_text((out / "regime.json").read_text())
    assert holdout_check(cfg, {"paper": rows}, published)["mae_nats"] == got["mae_nats"]
    assert {v["from"] for v in saved["teacher_losses"].values()} == {"pretraining eval (regime.json)"}
    # losses the sweep measured on the students' eval text win over the pretraining figures
    (published / "regime.json").write_text(json.dumps({"teachers": [
        {"name": t, "val_loss": float(v) + 1.0, "params": SIZES[t]} for t, v in TEACHERS.items()]}))
    measured = [replace(r, teacher_loss=float(TEACHERS[r.teacher])) for r in rows]
    again = holdout_check(cfg, {"paper": measured}, published)
    assert again["mae_nats"] == pytest.approx(got["mae_nats"], abs=1e-9)
    assert "teachers' losses: students' eval text" in summary_markdown({"parts": {}, "holdout": again})
    kept = json.loads((published / "holdout.json").read_text())["teacher_losses"]
    assert kept["T3"] == {"loss": float(TEACHERS["T3"]), "from": "students' eval text"}
    with pytest.raises(CapgapError, match="holdout.parts: no part 'nope'"):
        config.from_dict(StudyConfig, raw | {"holdout": {"hold_out": {"tokens": [4e6]},
                                                         "parts": ["nope"]}})
