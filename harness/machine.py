"""The machine a run trained on, as its manifest records it (`Manifest.machine`), and the line an
experiment prints when its runs come from more than one kind of machine.

The same code, spec and seed give the same bits only on a like machine: torch dispatches its CPU
kernels by the instruction set it finds (`torch.backends.cpu.get_cpu_capability()`: AVX2, AVX512,
...) and each set rounds floats its own way, as do GPU models. A trained run drifts apart from there
(a CIFAR-10 rerun on another CPU shared 26 of CSL's top 40 suspects), so a store shared between
machines (NFS, Ray workers) holds runs that agree only up to float rounding. The record is made by
the process that trains (`harness.jobs.make_manifest`, in the worker), never by the driver, and holds
no host name: the CPU model, the kernel set, the logical CPU count, the architecture, and for a CUDA
run the GPU's name and compute capability. A manifest written before the field existed reads as `{}`
(unknown), never as the reader's machine.
"""

from __future__ import annotations

import functools
import os
import platform
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import torch


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name: /proc/cpuinfo's `model name` on Linux, else `platform.processor()`."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep and key.strip() in ("model name", "Model", "cpu model") and value.strip():
                    return " ".join(value.split())
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_capability() -> str:
    """The CPU kernel set torch dispatches to ("AVX2", "AVX512", "DEFAULT", ...): it decides rounding."""
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):  # a torch without the call
        return "unknown"


def machine_record(device: str | torch.device = "cpu") -> dict[str, Any]:
    """This process's machine, as a run trained here on `device` records it (cheap: the CPU model is
    read once per process)."""
    record: dict[str, Any] = {"cpu": cpu_model(), "cpu_capability": cpu_capability(), "cpus": os.cpu_count() or 0,
                              "arch": platform.machine()}
    dev = torch.device(device)
    if dev.type == "cuda":
        major, minor = torch.cuda.get_device_capability(dev)
        record |= {"gpu": torch.cuda.get_device_name(dev), "gpu_capability": f"{major}.{minor}"}
    return record


def machine_kind(record: Mapping[str, Any]) -> tuple[str, ...] | None:
    """What decides a run's rounding (kernel set, CPU model, GPU); None for an unrecorded machine."""
    if not record:
        return None
    return (str(record.get("cpu_capability", "")), str(record.get("cpu", "")), str(record.get("gpu", "")))


def machine_label(record: Mapping[str, Any]) -> str:
    """`AVX2 AMD EPYC 7763` or `NVIDIA H200 (9.0) on AVX512 Intel Xeon ...`; `unknown` when unrecorded."""
    kind = machine_kind(record)
    if kind is None:
        return "unknown"
    cap, cpu, gpu = kind
    host = f"{cap} {cpu}".strip()
    return f"{gpu} ({record.get('gpu_capability', '?')}) on {host}" if gpu else host


def machine_counts(records: Iterable[Mapping[str, Any]]) -> tuple[list[tuple[str, int]], int]:
    """How many runs each kind of machine trained, most first (`machine_label`, count), and how
    many were stored before machines were recorded: the mixed-machines line's and `store info`'s."""
    records = list(records)
    kinds = Counter(machine_label(r) for r in records if r)
    return sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0])), sum(1 for r in records if not r)


def mixed_machines_line(records: Iterable[Mapping[str, Any]]) -> str | None:
    """One line when the runs were trained on more than one kind of machine, else None. Runs stored
    before machines were recorded are no kind: they are counted, never assumed to differ."""
    records = list(records)
    kinds, unknown = machine_counts(records)
    if len(kinds) < 2:
        return None
    parts = ", ".join(f"{n} on {label}" for label, n in kinds)
    older = f"; {unknown} stored before machines were recorded" if unknown else ""
    return (f"runs: the {len(records)} runs used were trained on {len(kinds)} kinds of machine ({parts}{older}): "
            "scores agree across them only up to float rounding")
