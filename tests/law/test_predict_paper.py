"""Without a fitted law, predict uses the paper's T* = 2.5·S and says so."""

from __future__ import annotations

import json

from capgap.cli import main


def test_predict_without_law_uses_the_paper(capsys):
    assert main(["law", "predict", "--student-params", "100M", "--teachers", "124M,350M,774M",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["teacher_params"] == 2.5e8
    assert out["interval"] is None
    assert out["source"].startswith("paper")
    assert out["closest_teacher"] == 3.5e8  # |ln(350/250)| < |ln(124/250)|
