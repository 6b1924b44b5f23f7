"""The near-duplicate search's peak memory, estimated before training, and the memory the machine has.

The suspects task refuses a search too big to finish (`harness.tasks.suspects.check_search_size`);
one that fits in time can still run out of memory, and it runs after training: an out-of-memory kill
there loses the task's output with no line saying why. So the peak is estimated from the sizes and
compared with what the machine has available: before training, and again right before the search
(`refusal`), when the process also holds what training and scoring left, which the estimate does not
count. Measured (VmRSS at each check, 2026-12-05): 117 MiB more on digits with every proxy (`local`
executor), 128 MiB trained in the process (`inprocess`); a 4,000-image CIFAR-10 subset with csl, 2
epochs: 39 MiB (`local`: the workers have exited), 275 MiB (`inprocess`: the model, torch's caches).

The estimate follows `harness.near_duplicates` and scikit-learn 1.9's brute-force cosine search,
phase by phase, with F = N x values x 4 bytes (the float32 features of the N training samples) and
Ft the same for the M test samples:

- exact copies: `np.unique` over the N + M rows, three copies of them as the dataset holds them, four
  with a test split (the rows concatenated first);
- the features: two F while they are made (the float32 copy and the rows kept), and F with two Ft
  while the test split's are;
- each k-nearest search of q queries against the N samples holds F and the queries, and per chunk
  of c = min(q, working memory / (8 N)) queries (scikit-learn's `working_memory`, 1 GiB by default)
  either a normalised copy of the samples (F), of the chunk (c x values x 4) and their product
  (4 c N), or the distances with their int64 sort order (12 c N); the samples searched among
  themselves in one chunk are normalised once;
- a mirrored search (images) adds its block of `mirror_rows` mirrored queries;
- the test split's search (M queries) holds Ft too.

Checked against measurements (peak resident set over the loaded data). With 8,192-row mirrored blocks
(2026-12-04, `/usr/bin/time -v` and ru_maxrss; results/cifar10-suspects-cpu/README.md): 50,000 CIFAR-10
images 2,333 MiB (these phases: 2,218), with the 10,000 test images 2,440 (2,335), 20,000 images 1,949
(1,866), 6,000 random 224 x 224 images 13.7 GiB (13.6; with today's 96 MiB blocks the estimate is 7.1).
Those runs imported scikit-learn during the search; what the phases miss there, 83 to 115 MiB at every
size, is `OVERHEAD`, rounded up. With 96 MiB blocks, scikit-learn imported first (ru_maxrss in a
process per search, random uint8 images, tests/test_search_memcap24.py): 4,000 32 x 32 images with
1,000 test images 286 MiB (phases: 277), 1,500 of 96 x 96 522 (514), 600 of 224 x 224 with 100 test
images 886 (881). A 4,000-image CIFAR-10 subset with its 4,000 test images (the quick preset's;
2026-12-05, `/usr/bin/time -v`, VmHWM over the loaded data): 439 MiB, scikit-learn imported during
the search (phases: 324, estimate 452), 378 with it imported first.

Tables (float features, Euclidean distance) take scikit-learn's chunked Euclidean search, whose
chunks are small; they are counted as the exact search, the features and the test features. 20,000
float32 rows of 500 values with 5,000 test rows measured 191 MiB (scikit-learn imported first; the phases
counted: 191).

Available memory is Linux's MemAvailable (/proc/meminfo), else the free pages `os.sysconf` reports
(`SC_AVPHYS_PAGES`: free only, not reclaimable cache, so it errs low), capped by the room under the
process's cgroup memory limits (its own or a parent's: a container's, a Slurm job's); None where
none of them exists (macOS, Windows), and then nothing is checked.
"""

from __future__ import annotations

import os
import sys

from harness.cgroups import SELF_CGROUP, cgroup_folders, read_text
from harness.errors import HarnessError, StorageError
from harness.near_duplicates import mirror_rows

#: What the measured peaks held beyond the phases counted, fitted on this machine (83 to 115 MiB at
#: every size; 115 on the CIFAR-10 subset): scikit-learn's import where the search pays it (the CLI
#: has imported it before the check on digits with every proxy, not on CIFAR-10 with csl alone), and
#: the temporaries the phases leave out (5 to 54 MiB with it imported first). Not what the process
#: holds besides the loaded data (a model, caches): the check right before the search sees that.
OVERHEAD = 128 * 2**20
#: scikit-learn's default `working_memory` in MiB, which sizes its chunks (`working_mib`).
WORKING_MIB = 1024
#: A cgroup's memory limit, its usage and the reclaimable cache `memory.stat` counts, in v2 and v1.
V2_NAMES = ("memory.max", "memory.current", "inactive_file")
V1_NAMES = ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")


def search_peak_bytes(n: int, m: int, values: int, mirrored: bool, item: int = 1, table: bool = False,
                      working_mib: int | None = None) -> int:
    """The near search's estimated peak bytes over the loaded data, for `n` training and `m` test
    samples of `values` values stored `item` bytes each; `mirrored`: images searched mirrored too;
    `table`: float features searched by Euclidean distance."""
    if n < 2:  # nothing to pair: the search returns at once
        return 0
    working = (_working_mib() if working_mib is None else working_mib) * 2**20
    f, ft = 4 * n * values, 4 * m * values
    copies = (4 if m else 3) * (n + m) * values * item  # the exact search's: np.unique's 3, the test's concatenation
    peak = max(copies, 2 * f, f + 2 * ft)  # the features as they are made
    if table:
        return max(peak, 2 * f + ft) + OVERHEAD
    for queries, held, same in ((n, f, True), (m, f + ft, False)):  # the training set itself, the test split
        if not queries:
            continue
        peak = max(peak, held + _neighbours_bytes(queries, n, values, working, same))
        if mirrored:
            block = min(queries, mirror_rows(values))
            peak = max(peak, held + 4 * block * values + _neighbours_bytes(block, n, values, working))
    return peak + OVERHEAD


def _working_mib() -> int:
    """scikit-learn's `working_memory` as the search will read it: its config once imported (a caller
    may have set it), else its environment variable, else its default; not imported for this."""
    sklearn = sys.modules.get("sklearn")
    if sklearn is not None:
        return int(sklearn.get_config()["working_memory"])
    return int(os.environ.get("SKLEARN_WORKING_MEMORY", WORKING_MIB))


def _neighbours_bytes(queries: int, n: int, values: int, working: int, same: bool = False) -> int:
    """What one brute-force cosine k-nearest search of `queries` rows among `n` allocates at its peak:
    a chunk's normalised copies and product, or its distances with their int64 sort order. `same`: the
    queries are the samples themselves, and in one chunk scikit-learn normalises them once."""
    chunk = min(queries, max(1, working // (8 * n)))
    own = 0 if same and chunk == queries else 4 * chunk * values
    return max(4 * n * values + own + 4 * chunk * n, 12 * chunk * n)


class SearchOutOfMemory(StorageError):
    """The search refused after training, for want of memory. A `StorageError` for its exit code: the
    CLI prints the one line and exits 1, as for a write after training that failed (the runs stay in
    the store); a `HarnessError`'s exit 2 says nothing was trained. `store`: the store that keeps the
    trained runs, for an API caller who reruns with it (the message names it too)."""

    def __init__(self, message: str, store: str = "") -> None:
        super().__init__(message)
        self.store = store


def refusal(n: int, m: int, values: int, need: int, available: Available, store: str | None = None
            ) -> HarnessError | SearchOutOfMemory:
    """The error that refuses a search of `need` bytes over `n` samples (and `m` test samples) of
    `values` values with `available` bytes: before training (`store` None), or right before the
    search, with the trained runs kept in `store`: then what frees memory, and that a rerun reuses them."""
    test = f" (and {m} test samples)" if m else ""
    has = ("this process's memory limit (its container's or job's cgroup) leaves" if available.cgroup
           else "this machine has")
    search = f"a near-duplicate search over {n} samples{test} of {values} values needs an estimated {in_units(need)}"
    if store is None:
        return HarnessError(f"suspects: {search} of memory and {has} {in_units(available)} available, so it would "
                            "run out after training; pass --task-arg suspects.duplicates=exact (byte-equal copies "
                            "only), --task-arg suspects.duplicates=off, or a smaller --subset")
    rss = _fields(_read("/proc/self/status")).get("VmRSS")
    held = f" (this process holds {in_units(rss * 1024)} now)" if rss else ""
    return SearchOutOfMemory(
        f"suspects: after training, {search} of memory and {has} {in_units(available)} available{held}, so it "
        f"would run out; the trained runs are kept in the store {store}: free memory or rerun on a machine with "
        "more (the rerun reuses the stored runs), or rerun with --task-arg suspects.duplicates=exact (byte-equal "
        "copies only) or --task-arg suspects.duplicates=off", store)


def in_units(size: int) -> str:
    """`size` bytes for a message: GiB to a tenth from 1 GiB, MiB below (0.0 GiB said nothing)."""
    return f"{size / 2**30:.1f} GiB" if size >= 2**30 else f"{size / 2**20:.0f} MiB"


class Available(int):
    """Bytes available, knowing whether a cgroup's limit set them: a refusal that says "this machine
    has" 2 GiB on a 256 GiB host misleads; the container's (or Slurm job's) limit is what to raise."""

    cgroup: bool

    def __new__(cls, size: int, cgroup: bool = False) -> Available:
        self = super().__new__(cls, size)
        self.cgroup = cgroup
        return self


def available_bytes() -> Available | None:
    """The memory this process can have now without swapping or its container's out-of-memory kill:
    the machine's, capped by the room under its cgroup's limit; None where neither can be read."""
    machine = _machine_available()
    room = _cgroup_room()
    if room is not None and (machine is None or room < machine):
        return Available(room, cgroup=True)
    return None if machine is None else Available(machine)


def _machine_available() -> int | None:
    """MemAvailable, else the free pages `os.sysconf` reports; None where neither exists."""
    meminfo = _fields(_read("/proc/meminfo"))
    if "MemAvailable" in meminfo:
        return meminfo["MemAvailable"] * 1024  # kB
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def _cgroup_room() -> int | None:
    """The room under this process's cgroup memory limits (v2, else v1), counting inactive file cache as
    free (the kernel reclaims it before killing); None without a limit or a cgroup to read. In a
    container /proc/meminfo shows the host's memory, and the container is killed at its own limit.
    The smallest room of the process's own cgroup and its ancestors: a limit set on a parent (a
    Slurm job's, above its step's "max") applies to the process all the same."""
    rooms = []
    for folder in cgroup_folders(_read(str(SELF_CGROUP)) or "", "memory"):
        for names in V2_NAMES, V1_NAMES:  # a folder holds one version's files
            limit, usage = _read(f"{folder}/{names[0]}"), _read(f"{folder}/{names[1]}")
            if limit is None or usage is None:
                continue
            if not limit.strip().isdigit() or int(limit) >= 2**60:  # "max", or v1's page-rounded 2**63
                continue
            cache = _fields(_read(f"{folder}/memory.stat")).get(names[2], 0)
            rooms.append(max(0, int(limit) - int(usage) + cache))
    return min(rooms) if rooms else None


#: Files are read decoded as paths are (`harness.cgroups.read_text`); tests replace it with a dict's `get`.
_read = read_text


def _fields(text: str | None) -> dict[str, int]:
    """`name value` or `Name: value kB` lines as {name: value}."""
    fields: dict[str, int] = {}
    for line in (text or "").splitlines():
        parts = line.replace(":", " ").split()
        if len(parts) >= 2 and parts[1].isdigit():
            fields[parts[0]] = int(parts[1])
    return fields
