"""Learning time (seed paper Eq. 7 with the Eq. 17 threshold) on hand-made gradient matrices."""

from __future__ import annotations

import numpy as np

from proxies.learning_time import learning_time


def test_hand_computed_matrix() -> None:
    # (E=4, N=3). Running means m_T: sample 0: 4, 3, 2, 2; sample 1: 1, 1, 1, 1; sample 2: 9, 9, 6, 4.5.
    # tau = (11 + 4 + 28.5) / 12 = 3.625 -> sample 0 first at T=2, sample 1 at T=1, sample 2 never.
    sq = np.array([[4.0, 1.0, 9.0],
                   [2.0, 1.0, 9.0],
                   [0.0, 1.0, 0.0],
                   [2.0, 1.0, 0.0]])
    np.testing.assert_array_equal(learning_time(sq), [2 / 4, 1 / 4, 1.0])


def test_threshold_is_inclusive_and_global() -> None:
    # m_T: sample 0: 4, 2; sample 1: 0, 1; sample 2: 2, 3. tau = 12 / 6 = 2 exactly.
    # sample 2 reaches tau only by equality at T=1 (m_T <= tau); sample 0 by equality at T=2.
    sq = np.array([[4.0, 0.0, 2.0],
                   [0.0, 2.0, 4.0]])
    np.testing.assert_array_equal(learning_time(sq), [1.0, 0.5, 0.5])


def test_uniform_gradients_learn_at_the_first_checkpoint() -> None:
    np.testing.assert_array_equal(learning_time(np.full((5, 3), 7.0)), np.full(3, 0.2))


def test_later_learners_score_higher() -> None:
    # gradients that fall to zero after k checkpoints: larger k, later learning, higher score
    epochs = 10
    sq = np.array([[1.0 if t < k else 0.0 for k in (1, 3, 6, 10)] for t in range(epochs)])
    lt = learning_time(sq)
    assert np.all(np.diff(lt) > 0) and lt[-1] == 1.0
