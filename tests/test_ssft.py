"""SSFT: forgetting times on hand-made traces, the second-phase recorder, and how the two runs'
first splits combine into one score per sample."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from harness.datasets import load_dataset
from harness.errors import HarnessError
from harness.prepared import prepare
from harness.presets import preset_for
from harness.recorders import RecorderRequest, RunContext, build_recorder
from harness.runspec import Corruption, DataSpec, RunSpec
from harness.subsets import stratified_folds, subset_indices
from harness.training import train_run
from proxies import ScoreContext, make_proxy
from proxies.ssft import forgetting_times, ssft_scores

NAN = np.nan


def test_forgetting_times_hand_traces() -> None:
    traces = np.array(
        [  # columns are samples, rows second-phase epochs 1..4
            [1, 1, 1, 0, 0, 0, NAN],
            [1, 1, 0, 1, 0, 1, NAN],
            [1, 0, 1, 0, 0, 1, NAN],
            [1, 0, 0, 1, 0, 0, NAN],
        ]
    )
    np.testing.assert_array_equal(forgetting_times(traces), [4, 2, 3, 4, 0, 3, NAN])
    np.testing.assert_allclose(ssft_scores(forgetting_times(traces), 4), [0, 0.5, 0.25, 0, 1, 0.25, NAN])


def test_forgetting_times_single_epoch_and_bad_shape() -> None:
    np.testing.assert_array_equal(forgetting_times(np.array([[1.0, 0.0]])), [1, 0])
    with pytest.raises(HarnessError):
        forgetting_times(np.zeros(3))


@pytest.fixture(scope="module")
def digits():
    spec = DataSpec("digits", 400, Corruption("noise", 0.1, seed=0))
    return spec, prepare(spec, load_dataset("digits", subset=400), torch.device("cpu"))


def test_recorder_matches_direct_eval(digits) -> None:
    _, data = digits
    a = torch.as_tensor(stratified_folds(data.labels, 2, 0)[0])
    rec = build_recorder(RecorderRequest.of("ssft_correct"), RunContext(data, 3, a, 32, torch.device("cpu")))
    assert rec.phases == (2,)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    rec.on_epoch_end(1, 2, model)
    with torch.no_grad():
        expected = (model(data.inputs(a)).argmax(1) == data.y[a]).float().numpy()
    got = rec.arrays()["correct"]
    assert got.shape == (3, data.n)
    np.testing.assert_array_equal(got[1, a.numpy()], expected)
    assert np.isnan(np.delete(got[1], a.numpy())).all() and np.isnan(got[[0, 2]]).all()


def test_two_phase_run_records_only_first_split(digits) -> None:
    spec, data = digits
    recipe = replace(preset_for("quick", "digits").recipe, epochs=2)
    proxy = make_proxy("ssft")
    base = RunSpec(spec, "mlp", recipe, seed=0)
    ab, ba = proxy.run_specs(base)
    assert (ab.train_on, ab.then_on) == (ba.then_on, ba.train_on)
    assert ab.train_on.kind == "half" and {ab.train_on.index, ba.train_on.index} == {0, 1}
    out = train_run(ab, data, [RecorderRequest.of("ssft_correct")], progress=False)
    correct = out.arrays["ssft_correct"]["correct"]
    first = subset_indices(ab.train_on, data.labels)
    assert correct.shape == (2, data.n)
    assert set(np.unique(correct[:, first])) <= {0.0, 1.0}
    assert np.isnan(np.delete(correct, first, axis=1)).all()


class _FakeRun:
    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self._arrays = arrays

    def arrays(self, key: str) -> dict[str, np.ndarray]:
        assert key == "ssft_correct"
        return self._arrays


def test_each_sample_scored_by_run_where_it_was_first() -> None:
    labels = np.repeat(np.arange(2), 4)  # 8 samples, 2 classes
    base = RunSpec(DataSpec(), "mlp", preset_for("quick", "digits").recipe, seed=3)
    proxy = make_proxy("ssft")
    ab, ba = proxy.run_specs(base)
    a, b = subset_indices(ab.train_on, labels), subset_indices(ba.train_on, labels)
    assert sorted(np.concatenate([a, b])) == list(range(8))
    c_ab = np.full((2, 8), NAN)
    c_ab[:, a] = [[1, 0, 1, 1], [1, 0, 0, 1]]  # times 2, 0, 1, 2
    c_ba = np.full((2, 8), NAN)
    c_ba[:, b] = [[0, 0, 1, 1], [0, 1, 0, 1]]  # times 0, 2, 1, 2
    ctx = ScoreContext(base, labels, 2, {ab: _FakeRun({"correct": c_ab}), ba: _FakeRun({"correct": c_ba})})
    expected = np.empty(8)
    expected[a] = 1 - np.array([2, 0, 1, 2]) / 2
    expected[b] = 1 - np.array([0, 2, 1, 2]) / 2
    np.testing.assert_allclose(proxy.score(ctx), expected)


def test_a_class_too_thin_for_halves_names_ssft_and_not_folds() -> None:
    """The halves are split on the labels the run trains on (noise included): the message said to
    use fewer folds, which SSFT does not have."""
    from harness.subsets import stratified_folds

    labels = np.array([0, 0, 0, 1, 1, 1, 2])
    with pytest.raises(HarnessError, match=r"^cannot make 2 stratified halves \(ssft\): class 2 has only 1 sample"
                                           r"\(s\) among the labels the run trains on \(label noise included\); use a "
                                           r"larger --subset$"):
        stratified_folds(labels, 2, 0, halves=True)
    with pytest.raises(HarnessError, match=r"cannot make 3 stratified folds: class 2 .* or fewer folds$"):
        stratified_folds(labels, 3, 0)
