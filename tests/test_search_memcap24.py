"""The near-duplicate search's memory: mirrored blocks sized by bytes, its peak estimated, and a search
that would not fit refused before training (harness.search_memory, check_search_size)."""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

import harness.near_duplicates as nd
import harness.search_memory as search_memory
import harness.tasks.suspects as suspects
from harness.errors import HarnessError
from harness.search_memory import OVERHEAD, Available, available_bytes, in_units, search_peak_bytes

GIB = 2**30


def _images(n: int, shape: tuple[int, ...]) -> SimpleNamespace:
    """A dataset of `n` samples of `shape` that holds one sample's memory (only the sizes are read)."""
    x = torch.zeros((1, *shape), dtype=torch.uint8).expand(n, *shape)
    return SimpleNamespace(x_train=x, x_test=x[:0])


def test_a_mirrored_block_is_sized_by_bytes_not_rows() -> None:
    assert nd.mirror_rows(3 * 32 * 32) == 8_192  # CIFAR-10: 96 MiB of float32 features, its block as before
    assert nd.mirror_rows(3 * 224 * 224) == 167  # 8,192 of these held 4.6 GiB
    assert nd.mirror_rows(10**9) == 1  # at least one


def test_a_block_smaller_than_the_samples_finds_the_same_pairs(monkeypatch) -> None:
    rng = np.random.default_rng(24)
    x = rng.integers(0, 256, size=(40, 3, 6, 5), dtype=np.uint8)
    x[7], x[12] = x[3, :, :, ::-1], x[2]  # a mirrored copy, an exact copy
    x[20] = np.clip(x[5].astype(int) + 3, 0, 255)  # a near copy
    test = rng.integers(0, 256, size=(5, 3, 6, 5), dtype=np.uint8)
    test[1], test[2] = x[9, :, :, ::-1], x[15]
    x_train, x_test = torch.from_numpy(x), torch.from_numpy(test)
    assert nd.mirror_rows(90) >= 40  # one block by default
    pairs, copies = nd.find_duplicates(x_train, x_test)
    assert pairs[["a", "b", "mirrored"]].values.tolist() == [[2, 12, False], [3, 7, True], [5, 20, False]]
    assert copies[["test", "train", "mirrored"]].values.tolist() == [[2, 15, False], [1, 9, True]]
    monkeypatch.setattr(nd, "MIRROR_BYTES", 3 * 90 * 4)
    assert nd.mirror_rows(90) == 3
    small_pairs, small_copies = nd.find_duplicates(x_train, x_test)
    # the same pairs; a mirrored distance may round otherwise (the product rounds by its shape): 3e-7 here,
    # 1.2e-7 in blocks of 3; exact copies stay at 0, the near floor at NEAR_FLOOR
    for small, full in ((small_pairs, pairs), (small_copies, copies)):
        pd.testing.assert_frame_equal(small.drop(columns="distance"), full.drop(columns="distance"))
        assert np.abs(small["distance"] - full["distance"]).max() <= 1e-6
        assert (small["distance"] <= nd.NEAR_FLOOR).tolist() == (full["distance"] <= nd.NEAR_FLOOR).tolist()


def test_the_estimate_for_given_sizes() -> None:
    # CIFAR-10's 50,000 training images, mirrored: the features (F), an 8,192-image mirrored block and
    # scikit-learn's 2,684-row chunk of float32 distances with their int64 order (12 bytes each)
    f, chunk = 4 * 50_000 * 3_072, 2**30 // (8 * 50_000)
    assert search_peak_bytes(50_000, 0, 3_072, True) == f + 4 * 8_192 * 3_072 + 12 * chunk * 50_000 + OVERHEAD
    assert round(search_peak_bytes(50_000, 0, 3_072, True) / GIB, 2) == 2.29  # measured: 2.28 + scikit-learn
    assert round(search_peak_bytes(50_000, 10_000, 3_072, True) / GIB, 2) == 2.41  # + the test split's; 2.38
    # 20,000 images of 224 x 224: F, its normalised copy and a 6,710-row chunk's (4 GB), with its distances
    f, chunk = 4 * 20_000 * 150_528, 2**30 // (8 * 20_000)
    assert search_peak_bytes(20_000, 0, 150_528, True) == 2 * f + 4 * chunk * 150_528 + 4 * chunk * 20_000 + OVERHEAD
    # digits (1,437 + 360 of 8 x 8): one chunk; the peak is the mirrored search's, ~152 MiB
    assert search_peak_bytes(1_437, 360, 64, True) == 4 * 1_437 * 64 * 2 + 12 * 1_437**2 + OVERHEAD
    # a float table (Euclidean, small chunks): the exact search's three copies of the rows
    assert search_peak_bytes(1_000, 0, 30, False, item=4, table=True) == 3 * 1_000 * 30 * 4 + OVERHEAD
    assert search_peak_bytes(1, 100, 3_072, True) == search_peak_bytes(0, 100, 3_072, True) == 0  # no search
    # with a test split the rows are concatenated first: four copies (measured at 20,000 + 5,000 rows of 500)
    assert search_peak_bytes(1_000, 200, 30, False, item=4, table=True) == 4 * 1_200 * 30 * 4 + OVERHEAD


def test_the_chunks_follow_scikit_learns_working_memory(monkeypatch) -> None:
    import sklearn

    half = search_peak_bytes(50_000, 0, 3_072, True, working_mib=512)
    assert round(half / GIB, 2) == 1.63  # chunks of 1,342 rows, not 2,684: 1.63 GiB, not 2.29
    assert search_peak_bytes(50_000, 0, 3_072, True) == search_peak_bytes(50_000, 0, 3_072, True, working_mib=1024)
    with sklearn.config_context(working_memory=512):
        assert search_peak_bytes(50_000, 0, 3_072, True) == half
    monkeypatch.delitem(sys.modules, "sklearn")  # not imported yet: its environment variable
    monkeypatch.setenv("SKLEARN_WORKING_MEMORY", "512")
    assert search_peak_bytes(50_000, 0, 3_072, True) == half


def test_a_search_that_would_not_fit_is_refused_with_its_estimate(monkeypatch) -> None:
    monkeypatch.setattr(suspects, "available_bytes", lambda: Available(16 * GIB))
    dataset = _images(19_000, (3, 224, 224))  # within the work cap (its shifted search counted), ~26 GiB
    with pytest.raises(HarnessError) as refused:
        suspects.check_search_size(dataset)
    assert str(refused.value) == (
        "suspects: a near-duplicate search over 19000 samples of 150528 values needs an estimated 25.9 GiB of "
        "memory and this machine has 16.0 GiB available, so it would run out after training; pass --task-arg "
        "suspects.duplicates=exact (byte-equal copies only), --task-arg suspects.duplicates=off, or a smaller "
        "--subset")
    monkeypatch.setattr(suspects, "available_bytes", lambda: Available(27 * GIB))
    suspects.check_search_size(dataset)  # 25.9 GiB fits


def test_a_refusal_under_a_cgroups_limit_names_the_limit_not_the_machine(monkeypatch) -> None:
    """A container's (or Slurm job's) limit is what to raise: "this machine has 16 GiB" misled on a big host."""
    monkeypatch.setattr(suspects, "available_bytes", lambda: Available(16 * GIB, cgroup=True))
    with pytest.raises(HarnessError) as refused:
        suspects.check_search_size(_images(19_000, (3, 224, 224)))
    assert ("needs an estimated 25.9 GiB of memory and this process's memory limit (its container's or job's "
            "cgroup) leaves 16.0 GiB available, so it would run out after training; pass --task-arg "
            "suspects.duplicates=exact") in str(refused.value)


def test_the_cli_refuses_before_training(tmp_path, monkeypatch, capsys) -> None:
    from harness.cli import main

    monkeypatch.setattr(suspects, "available_bytes", lambda: Available(2**20))  # 1 MiB: not even digits fits
    argv = ["run", "--tasks", "suspects", "--proxies", "csl", "--epochs", "1", "--store", str(tmp_path / "store"),
            "--out", str(tmp_path / "out"), "--seeds", "1", "--executor", "inprocess"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert ("a near-duplicate search over 1437 samples (and 360 test samples) of 64 values needs an estimated 152 MiB "
            "of memory and this machine has 1 MiB available") in err
    assert not (tmp_path / "store").exists()  # nothing trained
    assert main([*argv, "--task-arg", "suspects.duplicates=exact"]) == 0


def test_digits_is_not_refused_and_unknown_memory_is_not_checked(monkeypatch) -> None:
    from harness.datasets.digits import _load_digits

    monkeypatch.setattr(suspects, "available_bytes", lambda: Available(256 * 2**20))
    suspects.check_search_size(_load_digits(None))  # ~152 MiB
    monkeypatch.setattr(suspects, "available_bytes", lambda: None)
    suspects.check_search_size(_images(19_000, (3, 224, 224)))  # no figure to compare with: not checked


def test_sizes_are_said_in_gib_from_one_gib_and_in_mib_below() -> None:
    assert [in_units(n) for n in (2**20, 152 * 2**20 + 5, 2**30, int(26.84 * GIB))] == [
        "1 MiB", "152 MiB", "1.0 GiB", "26.8 GiB"]


MEMINFO = "MemTotal:       24000000 kB\nMemFree:  1000 kB\nMemAvailable:   20000000 kB\n"


def _files(monkeypatch, files: dict[str, str]) -> None:
    monkeypatch.setattr(search_memory, "_read", files.get)


def test_available_memory_is_memavailable_else_free_pages_else_unknown(monkeypatch) -> None:
    _files(monkeypatch, {"/proc/meminfo": MEMINFO})
    assert available_bytes() == 20_000_000 * 1024
    _files(monkeypatch, {})  # no /proc
    pages = {"SC_AVPHYS_PAGES": 1000, "SC_PAGE_SIZE": 4096}
    monkeypatch.setattr(search_memory.os, "sysconf", lambda name: pages[name])
    assert available_bytes() == 4_096_000

    def unsupported(name: str) -> int:
        raise ValueError(f"unrecognized configuration name {name}")

    monkeypatch.setattr(search_memory.os, "sysconf", unsupported)
    assert available_bytes() is None


def test_a_containers_memory_limit_caps_what_is_available(monkeypatch) -> None:
    """In a container /proc/meminfo shows the host's memory; the container is killed at its cgroup's limit."""
    own = "/sys/fs/cgroup/user.slice/job"
    v2 = {"/proc/meminfo": MEMINFO, "/proc/self/cgroup": "0::/user.slice/job\n", f"{own}/memory.max": "8589934592\n",
          f"{own}/memory.current": "6442450944\n", f"{own}/memory.stat": "anon 5\ninactive_file 1073741824\n"}
    _files(monkeypatch, v2)
    assert available_bytes() == 3 * GIB  # 8 GiB limit - 6 GiB used + 1 GiB of reclaimable cache
    _files(monkeypatch, {**v2, f"{own}/memory.max": "max\n"})
    assert available_bytes() == 20_000_000 * 1024  # no limit: the machine's
    root = "/sys/fs/cgroup/memory"  # v1, the container's own hierarchy at the root (its path not mounted)
    _files(monkeypatch, {"/proc/meminfo": MEMINFO, "/proc/self/cgroup": "4:memory:/docker/abc\n0::/\n",
                         f"{root}/memory.limit_in_bytes": "4294967296\n", f"{root}/memory.usage_in_bytes": "1073741824",
                         f"{root}/memory.stat": "cache 9\ntotal_inactive_file 0\n"})
    assert available_bytes() == 3 * GIB
    _files(monkeypatch, {"/proc/meminfo": MEMINFO, "/proc/self/cgroup": "4:memory:/\n",
                         f"{root}/memory.limit_in_bytes": "9223372036854771712", f"{root}/memory.usage_in_bytes": "1"})
    assert available_bytes() == 20_000_000 * 1024  # v1's "no limit"


def test_the_figure_says_whether_a_cgroups_limit_set_it(monkeypatch) -> None:
    """The refusal names the container's limit only where that limit, not the machine, set the figure."""
    own = "/sys/fs/cgroup/job"
    files = {"/proc/meminfo": MEMINFO, "/proc/self/cgroup": "0::/job\n", f"{own}/memory.current": "0\n"}
    for limit, expected in ((GIB, (GIB, True)), (100 * GIB, (20_000_000 * 1024, False))):
        _files(monkeypatch, {**files, f"{own}/memory.max": f"{limit}\n"})
        available = available_bytes()
        assert available is not None and (available, available.cgroup) == expected
    _files(monkeypatch, {"/proc/self/cgroup": "0::/job\n", f"{own}/memory.current": "0\n", f"{own}/memory.max": "5"})
    monkeypatch.setattr(search_memory.os, "sysconf", lambda name: (_ for _ in ()).throw(ValueError(name)))
    available = available_bytes()  # no machine figure: the limit's
    assert available is not None and (available, available.cgroup) == (5, True)


MEASURE = """
import resource, sys
import numpy as np, torch
from harness.near_duplicates import find_duplicates
n, m, c, h, w = map(int, sys.argv[1:])
rng = np.random.default_rng(0)
if h == 1:  # a float32 table (N, D, 1, 1)
    x = torch.from_numpy(rng.standard_normal((n, c, 1, 1), dtype=np.float32))
    t = torch.from_numpy(rng.standard_normal((m, c, 1, 1), dtype=np.float32))
else:
    x = torch.from_numpy(rng.integers(0, 256, size=(n, c, h, w), dtype=np.uint8))
    t = torch.from_numpy(rng.integers(0, 256, size=(m, c, h, w), dtype=np.uint8))
find_duplicates(x[:20], t[:5])  # scikit-learn imported, first-call buffers
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with open("/proc/self/statm") as f:
    before = int(f.read().split()[1]) * 4  # kB resident now
find_duplicates(x, t)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
assert after > peak, "the peak before the search was higher: not measured"
print((after - before) * 1024)
"""


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss in kB and /proc/self/statm: Linux")
@pytest.mark.parametrize("n, m, side", [(4_000, 1_000, 32), (1_500, 0, 96), (600, 100, 224)])
def test_the_estimate_holds_a_measured_peak(n: int, m: int, side: int) -> None:
    """Memory, not time: the peak resident set of one search in a process of its own. Measured on
    2026-12-04: 286, 522 and 886 MiB; the phases counted (the estimate less OVERHEAD, which is mostly
    scikit-learn's import, done here before measuring) 277, 514 and 881."""
    env = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", MEASURE, str(n), str(m), "3", str(side), str(side)], check=True,
                         capture_output=True, text=True, env={**os.environ, **env}).stdout
    measured = int(out.split()[-1])
    estimate = search_peak_bytes(n, m, 3 * side * side, True)
    assert measured <= estimate and abs(estimate - OVERHEAD - measured) <= 0.1 * measured


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss in kB and /proc/self/statm: Linux")
def test_the_estimate_holds_a_measured_table_peak() -> None:
    """20,000 float32 rows of 500 values with 5,000 test rows: 191 MiB measured, 191 counted (2026-12-04)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", MEASURE, "20000", "5000", "500", "1", "1"], check=True,
                         capture_output=True, text=True, env=env).stdout
    measured = int(out.split()[-1])
    estimate = search_peak_bytes(20_000, 5_000, 500, False, item=4, table=True)
    assert measured <= estimate and abs(estimate - OVERHEAD - measured) <= 0.1 * measured
