"""Package versions count in the kinds of machine (`harness.machine`). Since machine records hold
`versions`, runs trained with torch 2.5 and torch 2.14 on one CPU agree only up to float rounding,
but the mixed-machines line looked at hardware only and said nothing. A record without versions
(every run stored before they were recorded) is unknown: counted, never assumed to differ, so an
old store mixed with new runs of one torch prints no line. Hand-built records throughout."""

from __future__ import annotations

from harness.machine import differing_packages, machine_counts, machine_label, mixed_machines_line, run_label
from harness.store_report import machines_line

EPYC_HW = {"cpu": "AMD EPYC 7763 64-Core Processor", "cpu_capability": "AVX2", "cpus": 2, "arch": "x86_64"}
XEON_HW = {"cpu": "Intel(R) Xeon(R) Platinum 8480+", "cpu_capability": "AVX512", "cpus": 8, "arch": "x86_64"}
NEW = {"torch": "2.14.1", "numpy": "2.1.0", "scikit-learn": "1.5.2", "cleanlab": "2.7.0"}
OLD = {**NEW, "torch": "2.5.0"}
EPYC_NEW, EPYC_OLD = {**EPYC_HW, "versions": NEW}, {**EPYC_HW, "versions": OLD}
EPYC = "AVX2 AMD EPYC 7763 64-Core Processor"
TAIL = ": scores agree across them only up to float rounding"


def test_two_torches_on_one_cpu_are_two_kinds_named_by_their_torch() -> None:
    line = mixed_machines_line([EPYC_NEW, EPYC_NEW, EPYC_OLD])
    assert line == (f"runs: the 3 runs used were trained on 2 kinds of machine (2 on {EPYC} with torch 2.14.1, "
                    f"1 on {EPYC} with torch 2.5.0){TAIL}")


def test_an_old_store_without_versions_mixed_with_new_runs_of_one_torch_prints_no_line() -> None:
    assert mixed_machines_line([EPYC_HW, EPYC_HW, EPYC_NEW]) is None
    counts = machine_counts([EPYC_HW, EPYC_HW, EPYC_NEW])
    assert counts.kinds == 1 and counts.runs == [(EPYC, 3)] and counts.unrecorded == 0
    assert machines_line([EPYC_HW, EPYC_NEW]) == f"machines: 2 on {EPYC}"


def test_an_old_store_mixed_with_new_runs_of_two_torches_names_the_old_ones_unrecorded() -> None:
    line = mixed_machines_line([EPYC_HW, EPYC_NEW, EPYC_OLD, {}])
    assert line == (f"runs: the 4 runs used were trained on 2 kinds of machine (1 on {EPYC} with torch 2.14.1, "
                    f"1 on {EPYC} with torch 2.5.0, 1 on {EPYC} with versions unrecorded; "
                    f"1 stored before machines were recorded){TAIL}")


def test_versions_are_named_only_when_they_differ() -> None:
    """Another CPU, the same versions: the hardware alone, as before versions were recorded."""
    xeon = {**XEON_HW, "versions": NEW}
    line = mixed_machines_line([EPYC_NEW, xeon, EPYC_HW])
    assert line == (f"runs: the 3 runs used were trained on 2 kinds of machine (2 on {EPYC}, "
                    f"1 on AVX512 Intel(R) Xeon(R) Platinum 8480+){TAIL}")
    assert differing_packages([EPYC_NEW, xeon, EPYC_HW]) == ()
    # another CPU and another numpy: both differ, only numpy among the packages is named
    other = {**XEON_HW, "versions": {**NEW, "numpy": "1.26.4"}}
    assert differing_packages([EPYC_NEW, other]) == ("numpy",)
    assert machine_label(other, ("numpy",)) == "AVX512 Intel(R) Xeon(R) Platinum 8480+ with numpy 1.26.4"
    assert machine_label(other) == "AVX512 Intel(R) Xeon(R) Platinum 8480+"


def test_an_old_record_of_other_hardware_is_still_a_kind_of_its_own() -> None:
    """No versions makes a record unknown only in its versions: its hardware still counts."""
    line = mixed_machines_line([EPYC_NEW, XEON_HW])
    assert line is not None and "2 kinds of machine" in line
    assert "1 on AVX512 Intel(R) Xeon(R) Platinum 8480+," not in line  # no version named: none differs
    assert line.endswith(f"(1 on {EPYC}, 1 on AVX512 Intel(R) Xeon(R) Platinum 8480+){TAIL}")


def test_a_record_naming_fewer_packages_is_any_like_one_that_agrees_with_it() -> None:
    """A record without a package added later (cleanlab, say) is the kind of one it agrees with;
    one that disagrees on a package both name is a kind of its own."""
    fewer = {**EPYC_HW, "versions": {k: v for k, v in NEW.items() if k != "cleanlab"}}
    assert mixed_machines_line([EPYC_NEW, fewer]) is None
    assert machine_counts([EPYC_NEW, EPYC_OLD, fewer]).kinds == 2  # it is the 2.14.1 kind, not a third
    fewer_old = {**EPYC_HW, "versions": {k: v for k, v in OLD.items() if k != "cleanlab"}}
    line = mixed_machines_line([EPYC_NEW, fewer_old])
    assert line is not None and f"1 on {EPYC} with torch 2.5.0" in line


def test_a_run_resumed_with_another_torch_is_both_and_two_kinds() -> None:
    resumed = {**EPYC_NEW, "epochs": [3, 4], "earlier": [{**EPYC_OLD, "epochs": [1, 2]}]}
    assert run_label(resumed, ("torch",)) == f"{EPYC} with torch 2.5.0 then {EPYC} with torch 2.14.1"
    assert mixed_machines_line([resumed]) == (
        f"runs: the 1 run used was trained on 2 kinds of machine (1 on {EPYC} with torch 2.5.0 then {EPYC} "
        f"with torch 2.14.1){TAIL}")
    # its first epochs from a checkpoint made before versions were recorded: one kind, one label
    before = {**EPYC_NEW, "epochs": [3, 4], "earlier": [{**EPYC_HW, "epochs": [1, 2]}]}
    assert mixed_machines_line([before, EPYC_NEW]) is None
    assert machine_counts([before]).runs == [(EPYC, 1)]


def test_store_info_says_more_than_one_kind_for_two_torches() -> None:
    assert machines_line([EPYC_NEW, EPYC_OLD]) == (
        f"machines: 1 on {EPYC} with torch 2.14.1, 1 on {EPYC} with torch 2.5.0 (more than one kind: their scores "
        "agree only up to float rounding)")
