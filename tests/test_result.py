"""AssignmentResult JSON round trip and clear errors for bad result files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from qpm.assignment.result import AssignmentResult, SolveTimes
from qpm.errors import QPMError


def _result() -> AssignmentResult:
    w = np.zeros((7, 3), dtype=np.uint8)
    w[[0, 1], 0] = w[[1, 4], 1] = w[[0, 4], 2] = 1
    return AssignmentResult(
        "time_limit", "highs", objective=12.5, bound=13.0, selected_features=[0, 1, 4, 6],
        matrix=w, times=SolveTimes(0.1, 0.2, 3.0), solver_version="1.7", tau=0.25,
        verified=True, fallback="gurobi licence too small", message="stopped at limit",
    )


def test_json_round_trip(tmp_path):
    r = _result()
    r.save_json(tmp_path / "result.json")
    back = AssignmentResult.load_json(tmp_path / "result.json")
    assert back.to_dict() == r.to_dict()
    assert back.matrix.shape == (7, 3) and np.array_equal(back.matrix, r.matrix)
    assert back.times == r.times and back.gap == pytest.approx(0.04)


def test_from_dict_without_shape_uses_n_total():
    d = _result().to_dict()
    del d["shape"]
    assert AssignmentResult.from_dict(d, n_total=7).matrix.shape == (7, 3)
    assert AssignmentResult.from_dict(d).matrix.shape == (7, 3)  # largest index + 1 (6 selected)


def test_result_without_solution():
    r = AssignmentResult("infeasible", "scip", message="no unique assignment")
    back = AssignmentResult.from_dict(r.to_dict())
    assert back.matrix is None and back.objective is None and back.status == "infeasible"


def test_bad_result_files(tmp_path):
    with pytest.raises(QPMError, match="does not exist"):
        AssignmentResult.load_json(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"status": "optimal", "solver": ')
    with pytest.raises(QPMError, match="not valid JSON"):
        AssignmentResult.load_json(bad)
    bad.write_text(json.dumps({"solver": "x"}))
    with pytest.raises(QPMError, match="no 'status'"):
        AssignmentResult.load_json(bad)
    bad.write_text(json.dumps({"status": "great", "solver": "x"}))
    with pytest.raises(QPMError, match="Unknown result status"):
        AssignmentResult.load_json(bad)
    bad.write_text(json.dumps({"status": "optimal", "solver": "x", "assignment": {"0": ["a"]}}))
    with pytest.raises(QPMError, match="malformed"):
        AssignmentResult.load_json(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(QPMError, match="JSON object"):
        AssignmentResult.load_json(bad)


@pytest.mark.parametrize("edit, words", [
    (lambda d: d["assignment"].update({"0": [-1, 2]}), "indices >= 0"),
    (lambda d: d["assignment"].update({"0": [99, 2]}), "out of range"),
    (lambda d: d["assignment"].update({"7": [1, 2]}), "out of range"),
    (lambda d: d["assignment"].update({"0": [2, 2]}), "twice"),
    (lambda d: d.update(shape=[10**12, 3]), "not a plausible"),
    (lambda d: d.update(shape=[5, "3"]), "not a plausible"),
    (lambda d: d.update(selected_features=[0, 1]), "not among its selected_features"),
    (lambda d: d.update(objective="high"), "must be a number"),
    (lambda d: d.update(assignment=[1, 2]), "map class indices"),
])
def test_hand_edited_results_are_bounds_checked(edit, words):
    matrix = np.zeros((5, 3), dtype=np.uint8)
    matrix[[0, 1], 0] = matrix[[1, 2], 1] = matrix[[2, 3], 2] = 1
    d = AssignmentResult("optimal", "highs", objective=1.0, selected_features=[0, 1, 2, 3],
                         matrix=matrix).to_dict()
    assert AssignmentResult.from_dict(d).assignment == {0: [0, 1], 1: [1, 2], 2: [2, 3]}
    edit(d)
    with pytest.raises(QPMError, match=words):
        AssignmentResult.from_dict(d)
    with pytest.raises(QPMError, match="problem has 6"):
        AssignmentResult.from_dict(AssignmentResult(
            "optimal", "highs", selected_features=[0, 1, 2, 3], matrix=matrix).to_dict(),
            n_total=6)
