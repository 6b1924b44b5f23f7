"""Each machine record holds the versions of the packages that can change a run's floats. Before, only
the manifest's `versions` held them, the finishing process's: a run resumed on a Ray node with
another torch recorded that node's torch alone, though its first epochs trained with the driver's."""

from __future__ import annotations

from harness.machine import machine_record, trained_by
from harness.manifest import FLOAT_PACKAGES, package_versions


def test_a_machine_record_holds_this_process_versions() -> None:
    record = machine_record("cpu")
    mine = package_versions()
    assert record["versions"] == {p: mine[p] for p in FLOAT_PACKAGES}
    assert list(record["versions"]) == ["torch", "numpy", "scikit-learn", "cleanlab"]


def test_a_run_resumed_with_another_torch_records_both_in_order() -> None:
    here = machine_record("cpu")
    other = {**here, "versions": {**here["versions"], "torch": "9.9.9"}}
    record = trained_by([{**other, "epochs": [1, 2]}], here, 4)
    assert record == {**here, "epochs": [3, 4], "earlier": [{**other, "epochs": [1, 2]}]}
    # the same versions throughout: one machine, as an uninterrupted run records
    assert trained_by([{**here, "epochs": [1, 2]}], here, 4) == here
