"""Learning time (seed paper Eq. 7 with the Eq. 17 threshold; the released notebook's counting
rule) on hand-made gradient matrices."""

from __future__ import annotations

import numpy as np
import pytest

from harness.errors import HarnessError
from proxies import make_proxy
from proxies.learning_time import learning_time

# (E=4, N=3). Running means m_T: sample 0: 4, 3, 2, 2; sample 1: 1, 1, 1, 1; sample 2: 9, 9, 6, 4.5.
# tau = (11 + 4 + 28.5) / 12 = 3.625
HAND = np.array([[4.0, 1.0, 9.0],
                 [2.0, 1.0, 9.0],
                 [0.0, 1.0, 0.0],
                 [2.0, 1.0, 0.0]])


def test_hand_computed_matrix() -> None:
    # first: sample 0 first at T=2, sample 1 at T=1, sample 2 never
    np.testing.assert_array_equal(learning_time(HAND), [2 / 4, 1 / 4, 1.0])
    # count: checkpoints with m_T > 3.625: sample 0 once (T=1), sample 1 never, sample 2 all four
    np.testing.assert_array_equal(learning_time(HAND, rule="count"), [1 / 4, 0.0, 1.0])


def test_count_is_robust_to_a_dip_in_the_running_mean() -> None:
    # sample 0's running mean dips below tau at T=1 and then rises far above it: `first` says it
    # was learned at once (0.25), `count` says it stayed above the threshold 3 of 4 checkpoints
    sq = np.array([[0.0, 2.0], [8.0, 2.0], [8.0, 2.0], [8.0, 2.0]])
    # m_T: sample 0: 0, 4, 16/3, 6; sample 1: 2, 2, 2, 2; tau = (46/3 + 8) / 8 = 2.9167
    np.testing.assert_array_equal(learning_time(sq), [1 / 4, 1 / 4])
    np.testing.assert_array_equal(learning_time(sq, rule="count"), [3 / 4, 0.0])


def test_power_one_uses_the_gradient_norm() -> None:
    # power=1: g = sqrt(sq): (E=2, N=2) norms 4, 0 / 0, 2: m_T: sample 0: 4, 2; sample 1: 0, 1; tau = 7/4
    sq = np.array([[16.0, 0.0], [0.0, 4.0]])
    np.testing.assert_array_equal(learning_time(sq, power=1), [1.0, 0.5])
    np.testing.assert_array_equal(learning_time(sq, rule="count", power=1), [1.0, 0.0])
    # with power=2: m_T: 16, 8 / 0, 2; tau = 6.5: sample 0 never <= tau, sample 1 at T=1
    np.testing.assert_array_equal(learning_time(sq), [1.0, 0.5])
    np.testing.assert_array_equal(learning_time(sq, rule="count"), [1.0, 0.0])


def test_threshold_is_inclusive_and_global() -> None:
    # m_T: sample 0: 4, 2; sample 1: 0, 1; sample 2: 2, 3. tau = 12 / 6 = 2 exactly.
    # sample 2 reaches tau only by equality at T=1 (m_T <= tau); sample 0 by equality at T=2.
    sq = np.array([[4.0, 0.0, 2.0],
                   [0.0, 2.0, 4.0]])
    np.testing.assert_array_equal(learning_time(sq), [1.0, 0.5, 0.5])
    np.testing.assert_array_equal(learning_time(sq, rule="count"), [0.5, 0.0, 0.5])  # strictly above


def test_uniform_gradients_learn_at_the_first_checkpoint() -> None:
    np.testing.assert_array_equal(learning_time(np.full((5, 3), 7.0)), np.full(3, 0.2))
    np.testing.assert_array_equal(learning_time(np.full((5, 3), 7.0), rule="count"), np.zeros(3))


def test_later_learners_score_higher() -> None:
    # gradients that fall to zero after k checkpoints: larger k, later learning, higher score
    epochs = 10
    sq = np.array([[1.0 if t < k else 0.0 for k in (1, 3, 6, 10)] for t in range(epochs)])
    for rule in ("first", "count"):
        lt = learning_time(sq, rule=rule)
        assert np.all(np.diff(lt) > 0) and lt[-1] == 1.0


def test_proxy_parameters_labels_and_scores(score_ctx) -> None:
    assert make_proxy("learning_time").params == {"rule": "first", "power": 2}
    assert make_proxy("learning_time").label == "learning_time"
    assert make_proxy("learning_time", rule="count").label == "learning_time(rule=count)"
    ctx = score_ctx({"input_grads": {"sq": HAND}})
    np.testing.assert_array_equal(make_proxy("learning_time", rule="count").score(ctx), [1 / 4, 0.0, 1.0])
    np.testing.assert_array_equal(make_proxy("learning_time").score(ctx), [2 / 4, 1 / 4, 1.0])


@pytest.mark.parametrize("bad", [{"rule": "last"}, {"power": 3}, {"power": True}, {"power": "2"}, {"tau": 1}])
def test_bad_parameters_are_refused_when_built(bad: dict) -> None:
    with pytest.raises(HarnessError, match="learning_time|parameter"):
        make_proxy("learning_time", **bad)
