"""Where and how a run executes never changes its numbers: a batched-ensemble member gives the same
bits wherever it sits in its chunk (so whichever other runs happened to be pending), and an
experiment run with `--seeds 2` at once equals the same experiment run seed by seed on one store.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from baselines.stability import stability_specs
from harness.ensemble import train_members
from harness.experiment import Experiment
from harness.prepared import PreparedData
from harness.recorders import EVAL_LAST
from harness.runspec import RunSpec


@pytest.fixture(autouse=True)
def threads_kept():
    """Tests here set torch's thread count (1, or 2 through an experiment): later tests get theirs back."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _members(spec: RunSpec, data: PreparedData, batch_size: int) -> list[RunSpec]:
    """Three stability members of a one-epoch run at `batch_size`."""
    return stability_specs(replace(spec, recipe=replace(spec.recipe, epochs=1, batch_size=batch_size)), 3, 0.7)


def _arrays(out) -> dict[str, np.ndarray]:
    return out.arrays[EVAL_LAST.key]


def _assert_same_bits(a, b) -> None:
    assert sorted(_arrays(a)) == sorted(_arrays(b))
    for name in _arrays(a):
        assert np.array_equal(_arrays(a)[name], _arrays(b)[name]), name
    assert a.history == b.history and a.test_acc == b.test_acc and a.train_acc == b.train_acc


def test_a_members_eval_pass_does_not_depend_on_its_place_in_the_chunk(digits_noisy, base_spec) -> None:
    """Batch 64: the eval pass's last batch holds 157 of the 1,437 samples. Evaluated as rows of the
    stacked forward, the member in the second place got phi up to 2e-6 away from the same member
    trained alone (the first place was exact): the privacy task's scores then depended on the
    chunk, i.e. on `--seeds 2` at once vs seed by seed."""
    specs = _members(base_spec, digits_noisy, 64)
    together = train_members(specs, digits_noisy, [EVAL_LAST], progress=False)
    for j in (1, 2):
        (alone,) = train_members([specs[j]], digits_noisy, [EVAL_LAST], progress=False)
        _assert_same_bits(together[j], alone)


@pytest.mark.parametrize("batch_size", [33, 63])
def test_a_members_training_does_not_depend_on_its_place_in_the_chunk(digits_noisy, base_spec,
                                                                      batch_size: int) -> None:
    """An odd number of rows per member puts the second member's logits off a 64-byte boundary,
    where the CPU kernels round differently (parameters ~3e-8 apart after one epoch, phi 8e-6)."""
    specs = _members(base_spec, digits_noisy, batch_size)
    together = train_members(specs[:2], digits_noisy, [EVAL_LAST], progress=False)
    (alone,) = train_members([specs[1]], digits_noisy, [EVAL_LAST], progress=False)
    _assert_same_bits(together[1], alone)


def _privacy_config(make_config, store: Path, out: Path, seeds: tuple[int, ...]):
    return make_config(tasks=("memorization", "privacy"), proxies="final_loss", epochs=1, seeds=seeds,
                       task_args={"memorization": {"k": 3}}, store=store, out=out)


def _csv(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*.csv"))
            if p.name not in ("leaderboard.csv", "raw.csv")}  # both carry timings


def test_two_seeds_at_once_equal_seed_by_seed_on_one_store(make_config, tmp_path) -> None:
    """Seed 1's three reference models sat in places 3-5 of one chunk of six with `--seeds 2`, and
    in places 0-2 when seed 0 was already stored: its privacy vulnerabilities differed by 1e-6."""
    at_once = Experiment(_privacy_config(make_config, tmp_path / "a", tmp_path / "a_out", (0, 1))).run()
    Experiment(_privacy_config(make_config, tmp_path / "b", tmp_path / "b_out0", (0,))).run()
    in_turn = Experiment(_privacy_config(make_config, tmp_path / "b", tmp_path / "b_out", (0, 1))).run()
    assert len(in_turn.reused) == 4 and len(in_turn.trained) == 4  # seed 0 read back, seed 1 trained alone
    assert _csv(tmp_path / "a_out") == _csv(tmp_path / "b_out")
    values = ["task", "setting", "proxy", "metric", "seed", "value"]
    raw_a = at_once.raw[~at_once.raw.metric.str.contains("seconds")][values].sort_values(values[:5])
    raw_b = in_turn.raw[~in_turn.raw.metric.str.contains("seconds")][values].sort_values(values[:5])
    assert raw_a.reset_index(drop=True).equals(raw_b.reset_index(drop=True))


def test_a_proxys_scores_do_not_depend_on_the_other_proxies_selected(make_config, tmp_path) -> None:
    """final_loss alone put the base run (eval pass only) in the ensemble engine, and beside csl
    (per-batch losses) in the single engine: the two engines round differently, so final_loss's
    scores depended on which other proxies were selected (4e-4 per sample at 40 epochs)."""
    import pandas as pd

    outs = {}
    for proxies in ("final_loss", "final_loss,csl"):
        out = tmp_path / proxies.replace(",", "_")
        exp = Experiment(make_config(proxies=proxies, store=tmp_path / f"store_{proxies}", out=out))
        assert not exp.run().failures
        assert {exp.store.get(s).manifest.engine for s in exp.plan.runs} == {"single"}
        outs[proxies] = pd.read_csv(out / "scores" / "noise=0.1_seed0.csv")
    assert outs["final_loss"]["final_loss"].equals(outs["final_loss,csl"]["final_loss"])


def test_runs_read_back_with_another_thread_count_are_named(make_config, tmp_path) -> None:
    """The thread count is not in a run's address but changes its numbers (40 digits epochs: csl
    scores up to 12 apart, AUROC 1.5e-3), and a 1-thread experiment silently reported a 2-thread
    store's numbers as its own."""
    import warnings

    two = Experiment(make_config(threads=2, epochs=1, out=None)).run()
    assert len(two.trained) == 1
    with pytest.warns(UserWarning, match=r"1 run\(s\) read from the store were trained with 2 torch thread\(s\), "
                                         r"this experiment trains with 1.*pass --threads 2"):
        Experiment(make_config(threads=1, epochs=1, out=None)).run()
    with warnings.catch_warnings():  # the store line only: not the CPU-count one
        warnings.filterwarnings("error", message=r".*read from the store were trained with")
        again = Experiment(make_config(threads=2, epochs=1, out=None)).run()
    assert again.reused == two.trained
