"""benchmarks/measure_suggested_label.py also counts the two rules the suggested label was chosen over
(the highest mean training softmax with the given label allowed; the final model's best other class),
read from the runs' store entries. Checked on hand-made numbers against a hand count, and on a store
with hand-made entries: each seed's own arrays, the seeds' mean for the combined file, and a refusal
when an entry is missing or is not the tables' own."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.jobs import make_manifest
from harness.recipe import Recipe
from harness.runspec import DataSpec, RunSpec
from harness.store import RunStore
from harness.training import RunOutput

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "measure_suggested_label.py"
_spec = importlib.util.spec_from_file_location("_measure_suggested_label_measure24", SCRIPT)
assert _spec is not None and _spec.loader is not None
measure = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = measure  # dataclasses look their module up there
_spec.loader.exec_module(measure)

DATASET = "npz:x.npz"
# samples 1, 3 and 4 are wrong: given 1, 1, 0; true 2, 0, 1
TRUTH = pd.DataFrame({"given": [0, 1, 2, 1, 0], "true": [0, 2, 2, 0, 1]}, index=pd.Index(range(5), name="index"))
MEAN = np.array([[0.7, 0.2, 0.1],  # right label
                 [0.1, 0.5, 0.4],  # highest: its given 1; best other: 2, the true class
                 [0.1, 0.1, 0.8],  # right label
                 [0.45, 0.35, 0.2],  # highest: 0, the true class; best other too
                 [0.3, 0.2, 0.5]])  # highest: 2, neither; best other 2, not the true 1
FINAL = np.array([[0.9, 0.05, 0.05],
                  [0.1, 0.8, 0.1],  # best other than 1: a tie, the first (0), not the true 2
                  [0.2, 0.3, 0.5],
                  [0.2, 0.7, 0.1],  # best other than 1: 0, the true class
                  [0.6, 0.3, 0.1]])  # best other than 0: 1, the true class


def _table(suggested: list[int]) -> pd.DataFrame:
    """A ranked suspects table (most suspicious first) of the five samples."""
    return pd.DataFrame({"index": [3, 1, 0, 4, 2], "label": [1, 1, 0, 0, 2], "suggested": suggested,
                         "predicted": [1, 1, 0, 0, 2], "p_suggested": [0.3, 0.4, 0.2, 0.5, 0.1]})


def test_the_other_rules_count_as_by_hand() -> None:
    built = measure.Built(DATASET, "index", TRUTH)
    table = _table([0, 2, 1, 2, 0])  # the best other class of MEAN, in the table's order
    got = measure.other_rules(table, built, MEAN, FINAL)
    assert got == {"mean_argmax": 1, "mean_argmax_given": 1, "final_other": 2}
    with pytest.raises(SystemExit, match="does not give the table's `suggested`"):
        measure.other_rules(_table([0, 2, 1, 2, 1]), built, MEAN, FINAL)


def _put(store: RunStore, seed: int, mean: np.ndarray, final: np.ndarray, dataset: str = DATASET) -> None:
    """A stored clean run whose pass presented every sample twice (prob_sum = 2 x mean)."""
    spec = RunSpec(data=DataSpec(dataset=dataset), model="mlp", recipe=Recipe(), seed=seed)
    arrays = {"train_class_prob": {"prob_sum": (2 * mean).astype(np.float32), "seen": np.full(len(mean), 2.0)},
              "eval_pass[epochs=last]": {"probs_last": final.astype(np.float32)}}
    out = RunOutput(arrays=arrays, train_seconds=0.0, train_flops=0, recorder_seconds=dict.fromkeys(arrays, 0.0),
                    recorder_flops=dict.fromkeys(arrays, 0), train_acc=1.0, test_acc=1.0)
    store.put(spec, arrays, make_manifest(spec, out, "single", "cpu"))


def test_each_seed_reads_its_own_entry_and_the_combined_row_their_mean(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "store")
    other = MEAN[:, [1, 0, 2]]  # seed 1: classes 0 and 1 swapped
    _put(store, 0, MEAN, FINAL)
    _put(store, 1, other, FINAL[:, [1, 0, 2]])
    _put(store, 0, np.full((5, 3), 1 / 3), FINAL, dataset="npz:another.npz")  # not this data: not read
    built = measure.Built(DATASET, "index", TRUTH)
    out = tmp_path / "out"
    (out / "suspects").mkdir(parents=True)
    _table([0, 2, 1, 2, 0]).to_csv(out / "suspects" / "suspects_seed0.csv", index=False)
    # `other` rows: s0 [0.2,0.7,0.1] given 0 -> 1; s1 [0.5,0.1,0.4] given 1 -> 0; s2 [0.1,0.1,0.8] given 2 -> 0;
    # s3 [0.35,0.45,0.2] given 1 -> 0; s4 [0.2,0.3,0.5] given 0 -> 2; in the table's order (3, 1, 0, 4, 2):
    seed1 = _table([0, 0, 1, 2, 0])
    seed1.to_csv(out / "suspects" / "suspects_seed1.csv", index=False)
    # the seeds' mean softmax: s1 [0.3,0.3,0.4] -> argmax 2 (true), best other than 1: 2;
    # s3 [0.4,0.4,0.2] -> argmax 0 (true, first of a tie), best other 0; s4 [0.25,0.25,0.5] -> 2, best other 2.
    # Their mean final softmax: s1 [0.45,0.45,0.1] -> best other than 1: 0; s3 [0.45,0.45,0.1] -> 0 (true);
    # s4 [0.45,0.45,0.1] -> best other than 0: 1 (true).
    combined = _table([0, 2, 1, 2, 0])
    combined.to_csv(out / "suspects" / "suspects.csv", index=False)
    got = measure.measure(built, out, [0, 1], top=2, store=store.root)
    assert got.loc["seed 0", ["mean_argmax", "mean_argmax_given", "final_other"]].tolist() == [1, 1, 2]
    # seed 1: highest s1 0, s3 1 (given), s4 2: none true, one given. Best other of the swapped final
    # softmax: s1 [0.8,0.1,0.1] -> 0, s3 [0.7,0.2,0.1] -> 0 (true), s4 [0.3,0.6,0.1] -> 1 (true)
    assert got.loc["seed 1", ["mean_argmax", "mean_argmax_given", "final_other"]].tolist() == [0, 1, 2]
    assert got.loc["combined", ["mean_argmax", "mean_argmax_given", "final_other"]].tolist() == [2, 0, 2]
    with pytest.raises(SystemExit, match=r"no complete clean run of npz:x.npz .* seed\(s\) \[2\]"):
        measure.stored_probs(store.root, DATASET, [0, 1, 2])


def test_a_recount_names_the_work_folders_data_only_when_the_seed_builds_it_again(tmp_path: Path) -> None:
    work = tmp_path / "work"
    measure.build_digits(work / "digits", 0)
    same = measure.recounted(measure.build_digits(tmp_path / "s0" / "digits", 0), "digits", work)
    assert same.dataset == f"npz:{work / 'digits' / 'flipped.npz'}"  # the name the store's runs carry
    with pytest.raises(SystemExit, match="is not the data --data-seed builds"):
        measure.recounted(measure.build_digits(tmp_path / "s1" / "digits", 1), "digits", work)
