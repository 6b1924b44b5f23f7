"""The machine a run trained on, as its manifest records it (`Manifest.machine`), and the line an
experiment prints when its runs come from more than one kind of machine.

The same code, spec and seed give the same bits only on a like machine: torch dispatches its CPU
kernels by the instruction set it finds (`torch.backends.cpu.get_cpu_capability()`: AVX2, AVX512,
...) and each set rounds floats its own way, as do GPU models. A trained run drifts apart from there
(a CIFAR-10 rerun on another CPU shared 26 of CSL's top 40 suspects), so a store shared between
machines (NFS, Ray workers) holds runs that agree only up to float rounding. The record is made by
the process that trains (`harness.jobs.make_manifest`, in the worker), never by the driver, and holds
no host name: the CPU model, the kernel set, the logical CPU count, the architecture, the torch threads,
whether a single run trains compiled (`--compile`: neither is in a run's address, both change its floats),
for a run on an accelerator its name (CUDA: with its compute capability), and the `versions` of torch, numpy,
scikit-learn and cleanlab. A manifest written before the field existed reads as `{}` (unknown),
never as the reader's machine; a record made before `versions` has none (unknown too). A kind of
machine is its hardware and versions: torch 2.5 and 2.14 round apart as two CPUs do, but a record
without versions is never a kind of its own beside a like machine's that has them (`_kinds`).

A run killed and resumed from its checkpoint may finish on another machine than the one that trained
its first epochs, and its floats are then neither machine's. Each checkpoint carries the record of
the epochs it holds (`trained_by`, read back by `trained_before`), so the finished run's record is
the machine that finished it with the `epochs` [first, last] it trained and, in `earlier`, every
other machine before it, in order, each with its epochs. A run trained on one machine throughout
(resumed or not) has neither key; a checkpoint written before memprox recorded machines makes its
epochs an unrecorded machine (`{"epochs": [1, k]}`).
"""

from __future__ import annotations

import functools
import os
import platform
from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from typing import Any, NamedTuple

import torch

#: ARM's "CPU implementer" codes (/proc/cpuinfo on ARM Linux, as util-linux's lscpu names them).
ARM_IMPLEMENTERS = {0x41: "ARM", 0x42: "Broadcom", 0x43: "Cavium", 0x46: "Fujitsu", 0x48: "HiSilicon",
                    0x4E: "NVIDIA", 0x50: "APM", 0x51: "Qualcomm", 0x53: "Samsung", 0x56: "Marvell",
                    0x61: "Apple", 0x6D: "Microsoft", 0x70: "Phytium", 0xC0: "Ampere"}
#: ARM's own cores by "CPU part" (the cores of Graviton, Grace, Altra, Raspberry Pi, ...); another
#: part is named by its number.
ARM_PARTS = {0xD03: "Cortex-A53", 0xD05: "Cortex-A55", 0xD07: "Cortex-A57", 0xD08: "Cortex-A72",
             0xD0B: "Cortex-A76", 0xD0C: "Neoverse-N1", 0xD40: "Neoverse-V1", 0xD41: "Cortex-A78",
             0xD49: "Neoverse-N2", 0xD4F: "Neoverse-V2", 0xD84: "Neoverse-V3", 0xD8E: "Neoverse-N3"}
#: Files that name an ARM board where /proc/cpuinfo names no CPU (the device tree's `model`).
BOARD_FILES = ("/proc/device-tree/model", "/sys/firmware/devicetree/base/model")


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name: /proc/cpuinfo's (`cpuinfo_model`), else the device tree's board on ARM,
    else macOS's brand string, else `platform.processor()` (on a Mac only "arm" or "i386")."""
    return (cpuinfo_model(_read("/proc/cpuinfo")) or _board() or _mac_brand() or platform.processor()
            or "unknown")


def cpuinfo_model(text: str) -> str:
    """The CPU /proc/cpuinfo names: its `model name` (x86), `Model` or `cpu model`, else on ARM Linux,
    which names none of them, each kind of core from its `CPU implementer` and `CPU part`
    (`ARM Neoverse-N1 r3p1`; big.LITTLE: `ARM Cortex-A55 r2p0 + ARM Cortex-A76 r4p0`); "" for none."""
    pairs = [(key.strip(), " ".join(value.split())) for key, sep, value in
             (line.partition(":") for line in text.splitlines()) if sep]
    for key, value in pairs:
        if key in ("model name", "Model", "cpu model") and value:
            return value
    cores: list[str] = []
    core: dict[str, str] = {}
    for key, value in [*pairs, ("processor", "")]:  # each core's block starts with `processor`
        if key == "processor":
            name = _arm_core(core) if "CPU implementer" in core else ""
            cores += [name] if name and name not in cores else []
            core = {}
        core[key] = value
    return " + ".join(cores)


def _arm_core(core: Mapping[str, str]) -> str:
    """`ARM Neoverse-N1 r3p1`: implementer, part and ARM's r<variant>p<revision>."""
    implementer, part = _hex(core.get("CPU implementer")), _hex(core.get("CPU part"))
    vendor = ARM_IMPLEMENTERS.get(implementer, f"implementer {core.get('CPU implementer')}")
    name = ARM_PARTS.get(part) if implementer == 0x41 else None
    known = "CPU variant" in core and "CPU revision" in core
    step = f" r{_hex(core['CPU variant'])}p{core['CPU revision']}" if known else ""
    return f"{vendor} {name or 'part ' + str(core.get('CPU part', '?'))}{step}"


def _hex(value: str | None) -> int:
    try:
        return int(value or "", 16)
    except ValueError:
        return -1


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def _board() -> str:
    """An ARM board's model from its device tree (NUL-terminated), e.g. a Jetson's or a Pi's."""
    for path in BOARD_FILES:
        if name := " ".join(_read(path).replace("\x00", " ").split()):
            return name
    return ""


def _mac_brand() -> str:
    """macOS names its CPU only through sysctl ("Apple M2 Pro", "Intel(R) Core(TM) i7-..."); ""
    elsewhere or when sysctl cannot answer."""
    if platform.system() != "Darwin":
        return ""
    import subprocess

    try:
        done = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True,
                              timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    return " ".join(done.stdout.split()) if done.returncode == 0 else ""


def cpu_capability() -> str:
    """The CPU kernel set torch dispatches to ("AVX2", "AVX512", "DEFAULT", ...): it decides rounding."""
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):  # a torch without the call
        return "unknown"


def accelerator_record(dev: torch.device) -> dict[str, Any]:
    """What torch tells of the accelerator a run trains on: the GPU's name, and for CUDA its compute
    capability, for Apple's MPS its GPU cores, for Intel's XPU its driver; {} on the CPU. A torch
    without a call leaves that key out: the record says what is known."""
    if dev.type == "cuda":
        major, minor = torch.cuda.get_device_capability(dev)
        return {"gpu": torch.cuda.get_device_name(dev), "gpu_capability": f"{major}.{minor}"}
    if dev.type == "mps":
        mps = torch.backends.mps
        record: dict[str, Any] = {"gpu": _ask(getattr(mps, "get_name", None)) or "Apple MPS device"}
        cores = _ask(getattr(mps, "get_core_count", None))
        return record | ({"gpu_cores": int(cores)} if cores else {})
    if dev.type == "xpu":
        props = torch.xpu.get_device_properties(dev)
        driver = getattr(props, "driver_version", "")
        return {"gpu": str(props.name)} | ({"gpu_driver": str(driver)} if driver else {})
    return {}


def _ask(call: Any) -> Any:
    """`call()`, or None where this torch lacks it or cannot answer."""
    try:
        return call() if call is not None else None
    except (RuntimeError, AttributeError):
        return None


def machine_record(device: str | torch.device = "cpu", compiled: bool | None = None) -> dict[str, Any]:
    """This process's machine, as a run trained here on `device` records it (cheap: the CPU model is
    read once per process), with the threads it trains on: a run killed at `--threads 1` and resumed at 2
    recorded 2 alone, though its first epochs' floats are 1 thread's (`run_threads`); and, given, whether it
    trains compiled: a run killed under `--compile` and resumed without it recorded the finishing process's
    choice alone (`Manifest.compiled`), though its first epochs are compiled floats (`run_compiled`)."""
    record: dict[str, Any] = {"cpu": cpu_model(), "cpu_capability": cpu_capability(), "cpus": os.cpu_count() or 0,
                              "arch": platform.machine(), "threads": torch.get_num_threads()}
    record |= {} if compiled is None else {"compiled": bool(compiled)}
    return record | accelerator_record(torch.device(device)) | {"versions": dict(_versions())}


@functools.cache
def _versions() -> tuple[tuple[str, str], ...]:
    """The packages that can change a run's floats, as this process has them: per machine record, so a
    run resumed on a Ray node with another torch records both (the manifest's `versions` is the
    finishing process's alone)."""
    from harness.manifest import FLOAT_PACKAGES, package_versions

    return tuple((k, v) for k, v in package_versions().items() if k in FLOAT_PACKAGES)


# a run trained by more than one process ------------------------------------------------------------
def trained_before(state: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The machines that trained a resumed checkpoint's epochs, in order, each with its `epochs`
    [first, last]: [] when nothing was resumed, one unrecorded machine for a checkpoint written before
    memprox recorded them (or with a record it cannot read)."""
    if state is None:
        return []
    done = int(state["epoch"])
    record = state.get("machine")
    if not isinstance(record, Mapping) or not _well_formed(record):
        return [{"epochs": [1, done]}]
    return [*(dict(r) for r in record.get("earlier", [])), {**_own(record), "epochs": [_next_epoch(record), done]}]


def trained_by(before: list[dict[str, Any]], here: Mapping[str, Any], last_epoch: int) -> dict[str, Any]:
    """The record of a run whose first epochs `before` trained (`trained_before`) and the rest, up to
    `last_epoch`, this machine (`here`). A machine like the one before it extends its epochs, so a
    run resumed where it was killed records what an uninterrupted one does."""
    machines = [*before, {**here, "epochs": [before[-1]["epochs"][1] + 1 if before else 1, last_epoch]}]
    merged: list[dict[str, Any]] = []
    for m in machines:
        if merged and _own(merged[-1]) == _own(m):
            merged[-1] = {**merged[-1], "epochs": [merged[-1]["epochs"][0], m["epochs"][1]]}
        else:
            merged.append(m)
    if len(merged) == 1:
        return _own(merged[0])
    return {**merged[-1], "earlier": merged[:-1]}


def run_machines(record: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Every machine that trained a run, in order (the one that finished it last); [] when unrecorded."""
    if not record:
        return []
    earlier = record.get("earlier", [])
    return [*(earlier if isinstance(earlier, list) else []), _own(record)]


def _own(record: Mapping[str, Any]) -> dict[str, Any]:
    """One machine's record, without the epochs it trained and the machines before it."""
    return {k: v for k, v in record.items() if k not in ("epochs", "earlier")}


def _next_epoch(record: Mapping[str, Any]) -> int:
    earlier = record.get("earlier", [])
    return int(earlier[-1]["epochs"][1]) + 1 if earlier else 1


def _well_formed(record: Mapping[str, Any]) -> bool:
    earlier = record.get("earlier", [])
    return isinstance(earlier, list) and all(
        isinstance(r, Mapping) and isinstance(r.get("epochs"), list) and len(r["epochs"]) == 2 for r in earlier)


# kinds of machine ----------------------------------------------------------------------------------
def machine_kind(record: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The hardware that decides a run's rounding (kernel set, CPU model, GPU); None for an unrecorded
    machine. The package versions that decide it too are `machine_versions`, counted by `_kinds`."""
    if not any(record.get(k) for k in ("cpu", "cpu_capability", "gpu")):
        return None
    return (str(record.get("cpu_capability", "")), str(record.get("cpu", "")), str(record.get("gpu", "")))


def machine_versions(record: Mapping[str, Any]) -> dict[str, str]:
    """The record's `versions` (torch, numpy, ...); {} for a record made before machines recorded them:
    unknown, never the reader's."""
    versions = record.get("versions")
    return {str(k): str(v) for k, v in versions.items()} if isinstance(versions, Mapping) else {}


def _kinds(machines: Iterable[Mapping[str, Any]]) -> set[tuple[tuple[str, ...], frozenset[tuple[str, str]]]]:
    """The kinds (hardware and versions) of the recorded machines. A record that says less than another
    of the same hardware and nothing against it (no versions: made before they were recorded; fewer
    packages) is that one's kind, not one of its own: unknown is counted, never assumed to differ. So
    a store of old runs and new ones of one torch is one kind, and torch 2.5 next to 2.14 is two."""
    keys = {(hw, frozenset(machine_versions(m).items())) for m in machines if (hw := machine_kind(m)) is not None}
    return {k for k in keys if not any(o[0] == k[0] and k[1] < o[1] for o in keys)}


def differing_packages(machines: Iterable[Mapping[str, Any]]) -> tuple[str, ...]:
    """The packages recorded with more than one version by the recorded machines: the only ones a
    label names (versions alike everywhere would only lengthen the line)."""
    seen: dict[str, set[str]] = {}
    for m in (m for m in machines if machine_kind(m) is not None):
        for package, version in machine_versions(m).items():
            seen.setdefault(package, set()).add(version)
    return tuple(p for p, versions in seen.items() if len(versions) > 1)


def machine_label(record: Mapping[str, Any], packages: Collection[str] = ()) -> str:
    """`AVX2 AMD EPYC 7763` or `NVIDIA H200 (9.0) on AVX512 Intel Xeon ...`, with the versions of
    `packages` (`... with torch 2.14.1`; `differing_packages`); `unknown` when unrecorded."""
    kind = machine_kind(record)
    if kind is None:
        return "unknown"
    cap, cpu, gpu = kind
    host = f"{cap} {cpu}".strip()
    gpu_cap = f" ({record['gpu_capability']})" if record.get("gpu_capability") else ""
    return (f"{gpu}{gpu_cap} on {host}" if gpu else host) + _versions_label(record, packages)


def _versions_label(record: Mapping[str, Any], packages: Collection[str]) -> str:
    """` with torch 2.14.1 and numpy 2.1.0`; ` with versions unrecorded` for a record made before
    machines recorded them; "" when no package is named."""
    if not packages:
        return ""
    versions = machine_versions(record)
    if not versions:
        return " with versions unrecorded"
    return " with " + " and ".join(f"{p} {versions.get(p, 'unrecorded')}" for p in packages)


def run_threads(record: Mapping[str, Any]) -> set[int]:
    """The thread counts that trained a run's epochs, as its machines recorded them (none before 5 December
    2026, when a record began to carry them)."""
    return {int(m["threads"]) for m in run_machines(record) if isinstance(m.get("threads"), int)}


def run_compiled(record: Mapping[str, Any]) -> set[bool]:
    """Whether the run's epochs trained compiled (True), eager (False) or both, as its machines recorded it
    (none before 5 December 2026, when a record began to carry it: `Manifest.compiled` is then all there is)."""
    return {m["compiled"] for m in run_machines(record) if isinstance(m.get("compiled"), bool)}


def run_label(record: Mapping[str, Any], packages: Collection[str] = ()) -> str:
    """A run's kinds of machine in order: `AVX2 AMD EPYC 7763` for one, `AVX2 AMD EPYC 7763 then
    AVX512 Intel ...` for a run resumed on another kind (an unrecorded one reads `an unrecorded
    machine`), each with the versions of `packages` (`machine_label`)."""
    labels: list[str] = []
    for m in run_machines(record):
        label = machine_label(m, packages) if machine_kind(m) else "an unrecorded machine"
        if not labels or labels[-1] != label:
            labels.append(label)
    return " then ".join(labels)


class MachineCounts(NamedTuple):
    """How many runs each kind of machine trained, most first (`run_label`, count); how many runs
    were stored before machines were recorded; how many kinds trained any of the runs' epochs."""

    runs: list[tuple[str, int]]
    unrecorded: int
    kinds: int


def machine_counts(records: Iterable[Mapping[str, Any]]) -> MachineCounts:
    """The mixed-machines line's and `store info`'s counts. A run resumed on another kind is an entry
    of its own (`X then Y`) and adds both kinds: its floats are neither machine's. A run stored before
    machines were recorded is no kind; one resumed from such a run's checkpoint is its known kinds."""
    records = list(records)
    known = [r for r in records if any(machine_kind(m) for m in run_machines(r))]
    machines = [m for r in known for m in run_machines(r)]
    packages = differing_packages(machines)
    labels = Counter(run_label(r, packages) for r in known)
    return MachineCounts(sorted(labels.items(), key=lambda kv: (-kv[1], kv[0])), len(records) - len(known),
                         len(_kinds(machines)))


def mixed_machines_line(records: Iterable[Mapping[str, Any]]) -> str | None:
    """One line when the runs were trained on more than one kind of machine (hardware or package
    versions: `_kinds`), else None. Runs stored before machines were recorded are no kind, and runs
    stored before their versions were: counted, never assumed to differ."""
    records = list(records)
    counts = machine_counts(records)
    if counts.kinds < 2:
        return None
    parts = ", ".join(f"{n} on {label}" for label, n in counts.runs)
    older = f"; {counts.unrecorded} stored before machines were recorded" if counts.unrecorded else ""
    runs = f"the {len(records)} runs used were" if len(records) != 1 else "the 1 run used was"  # resumed elsewhere
    return (f"runs: {runs} trained on {counts.kinds} kinds of machine ({parts}{older}): "
            "scores agree across them only up to float rounding")
