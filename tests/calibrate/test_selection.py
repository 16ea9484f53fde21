"""fit_selection: the candidates, the cross-validated choice, the ridge by hand, and bad input."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from das.calibrate.selection import Selection, fit_ridge, fit_selection, signed_log
from das.errors import DasError


def population(k: int, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Accuracy that a score 'good' orders exactly and params orders backwards."""
    rng = np.random.default_rng(seed)
    acc = np.sort(rng.uniform(40, 60, size=k))
    return {"params": np.linspace(1e6, 1e5, k), "good": acc * 3.0 + 7.0, "noise": rng.normal(size=k)}, acc


def test_a_score_that_orders_the_students_is_chosen_with_zero_regret():
    scores, acc = population(8)
    selection = fit_selection(scores, acc)
    assert selection.name == "good"
    assert selection.expected_regret == 0.0
    assert selection.regrets["params"] > 0
    assert np.array_equal(np.argsort(selection.objective(scores)), np.argsort(acc))


def test_ties_go_to_params():
    acc = np.array([50.0, 52.0, 51.0, 55.0, 54.0, 58.0])
    params = np.array([1e5, 2e5, 3e5, 4e5, 5e5, 6e5])
    selection = fit_selection({"params": params, "same_order": params * 2}, acc)
    assert selection.regrets["params"] == selection.regrets["same_order"]
    assert selection.name == "params"


def test_cross_validated_regret_of_a_single_score_by_hand():
    acc = np.array([50.0, 53.0, 51.0, 56.0])
    params = np.array([4.0, 3.0, 2.0, 1.0]) * 1e5
    selection = fit_selection({"params": params}, acc)  # K = 4: hold out 2, ridge needs 3 to fit: only params
    by_hand = []
    for out in itertools.combinations(range(4), 2):
        a, p = acc[list(out)], params[list(out)]
        by_hand.append(a.max() - a[np.argmax(p)])
    assert selection.splits == 6 and selection.held_out == 2
    assert selection.regrets == {"params": pytest.approx(np.mean(by_hand))}
    assert "ridge left out" in selection.describe()


def test_ridge_matches_the_closed_form_on_standardised_values():
    rng = np.random.default_rng(3)
    cols = {"params": rng.uniform(1e4, 1e6, 10), "meco": rng.uniform(10, 1000, 10), "az_expressivity": rng.normal(size=10)}
    acc = rng.uniform(40, 60, 10)
    rule = fit_ridge(cols, acc)
    x = np.stack([np.log(cols["params"]), signed_log(cols["meco"]), signed_log(cols["az_expressivity"])], axis=1)
    z = (x - x.mean(0)) / x.std(0)
    y = (acc - acc.mean()) / acc.std()
    w = np.linalg.inv(z.T @ z + np.eye(3)) @ z.T @ y
    assert rule.weights == pytest.approx(tuple(w))
    assert rule.objective(cols) == pytest.approx(z @ w)


def test_ridge_is_a_candidate_from_enough_students_and_its_objective_extends_to_new_students():
    scores, acc = population(16, seed=1)
    scores = {"params": scores["params"], "meco": scores["good"], "az_expressivity": scores["noise"]}
    selection = fit_selection(scores, acc)
    assert "ridge" in selection.regrets
    assert selection.splits == 500 and selection.held_out == 8
    one = selection.objective({k: v[:1] for k, v in scores.items()})  # one student scored alone, as a search trial is
    assert one.shape == (1,) and np.isfinite(one[0])


def test_a_score_that_failed_on_a_student_is_left_out_and_ranks_last_after():
    scores, acc = population(8)
    scores["good"][2] = math.nan
    selection = fit_selection(scores, acc)
    assert "good" not in selection.regrets
    assert any("good left out" in n for n in selection.notes)
    rule_scores = {"params": np.array([1e5, 2e5]), "noise": np.array([0.1, math.nan])}
    value = fit_selection({"params": scores["params"], "noise": scores["noise"]}, acc).objective(rule_scores)
    assert np.all(np.isfinite(value)) or value[1] == -np.inf


def test_round_trip_keeps_the_objective():
    scores, acc = population(12, seed=2)
    scores = {"params": scores["params"], "meco": scores["noise"], "az_progressivity": scores["good"] + np.random.default_rng(0).normal(size=12) * 5}
    selection = fit_selection(scores, acc)
    again = Selection.from_dict(selection.to_dict())
    assert np.array_equal(again.objective(scores), selection.objective(scores))
    assert again.describe() == selection.describe()


@pytest.mark.parametrize(("scores", "acc", "words"), [
    ({"params": [1, 2]}, [50, 51], "at least 3 students"),
    ({"params": [1, 2, 3]}, [50, 50, 50], "all 3 calibration accuracies equal"),
    ({"params": [1, 2, 3]}, [50, math.nan, 52], "finite"),
    ({"meco": [1, 2, 3]}, [50, 51, 52], "must include 'params'"),
    ({"params": [1, 2]}, [50, 51, 52], "has 2 values for 3"),
])
def test_bad_input_is_one_clear_line(scores, acc, words):
    with pytest.raises(DasError, match=words) as err:
        fit_selection(scores, acc)
    assert "\n" not in str(err.value)


def test_objective_names_missing_scores():
    scores, acc = population(8)
    selection = fit_selection(scores, acc)
    with pytest.raises(DasError, match="needs the scores"):
        selection.objective({"params": [1.0]})
