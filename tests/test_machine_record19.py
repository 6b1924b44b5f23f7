"""The machine record across accelerators and CPUs (`harness.machine`): an MPS or XPU run recorded
no accelerator; ARM Linux, whose /proc/cpuinfo has no `model name`, recorded its CPU as "unknown"."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest
import torch

import harness.machine
from harness.machine import machine_record, mixed_machines_line


# ARM Linux's CPU ----------------------------------------------------------------------------------
def _arm_core(n: int, part: str, variant: str = "0x3", revision: str = "1") -> str:
    return (f"processor\t: {n}\nBogoMIPS\t: 243.75\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32\n"
            f"CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: {variant}\nCPU part\t: {part}\n"
            f"CPU revision\t: {revision}\n\n")


#: /proc/cpuinfo of a 2-core Neoverse-N1 (AWS Graviton2, Ampere Altra): no `model name` line.
GRAVITON2 = _arm_core(0, "0xd0c") + _arm_core(1, "0xd0c")
#: a phone-class big.LITTLE SoC: two kinds of core.
BIG_LITTLE = (_arm_core(0, "0xd05", "0x2", "0") + _arm_core(1, "0xd05", "0x2", "0")
              + _arm_core(2, "0xd0b", "0x4", "0"))
#: a Raspberry Pi 4: its board line, as memprox read it before, wins.
PI4 = (_arm_core(0, "0xd08", "0x0", "3")
       + "Hardware\t: BCM2835\nRevision\t: c03114\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n")


def _files(monkeypatch, files: dict[str, str]) -> None:
    """`harness.machine` sees these files (others missing) and asks platform nothing useful."""

    def fake_open(path, *args, **kwargs):
        if str(path) not in files:
            raise FileNotFoundError(path)
        return io.StringIO(files[str(path)])

    monkeypatch.setattr(harness.machine, "open", fake_open, raising=False)
    monkeypatch.setattr(harness.machine.platform, "processor", lambda: "")
    harness.machine.cpu_model.cache_clear()


@pytest.fixture(autouse=True)
def _fresh_cpu_model():
    harness.machine.cpu_model.cache_clear()
    yield
    harness.machine.cpu_model.cache_clear()


@pytest.mark.parametrize(("cpuinfo", "board", "expected"), [
    (GRAVITON2, None, "ARM Neoverse-N1 r3p1"),
    (BIG_LITTLE, None, "ARM Cortex-A55 r2p0 + ARM Cortex-A76 r4p0"),
    (_arm_core(0, "0xd4f", "0x0", "0"), "NVIDIA Jetson whatever\x00", "ARM Neoverse-V2 r0p0"),  # the CPU, not the board
    (_arm_core(0, "0xac3").replace("0x41", "0xc0"), None, "Ampere part 0xac3 r3p1"),  # a part memprox has no name for
    ("processor\t: 0\nBogoMIPS\t: 50.00\n", "NVIDIA Jetson AGX Orin Developer Kit\x00",
     "NVIDIA Jetson AGX Orin Developer Kit"),
    (PI4, None, "Raspberry Pi 4 Model B Rev 1.4"),
    ("processor\t: 0\nmodel name\t: AMD EPYC 7763 64-Core Processor\n", None, "AMD EPYC 7763 64-Core Processor"),
], ids=["graviton2", "big_little", "grace_on_a_board", "unnamed_part", "device_tree_only", "raspberry_pi", "x86"])
def test_the_cpu_model_on_arm_linux_is_named_from_cpuinfo_or_the_device_tree(monkeypatch, cpuinfo, board,
                                                                             expected) -> None:
    files = {"/proc/cpuinfo": cpuinfo} | ({"/proc/device-tree/model": board} if board else {})
    _files(monkeypatch, files)
    assert harness.machine.cpu_model() == expected


def test_nothing_to_read_is_unknown(monkeypatch) -> None:
    _files(monkeypatch, {})
    assert harness.machine.cpu_model() == "unknown"


# MPS and XPU --------------------------------------------------------------------------------------
def test_an_mps_run_records_the_metal_device_and_its_gpu_cores(monkeypatch) -> None:
    monkeypatch.setattr(torch.backends.mps, "get_name", lambda: "Apple M2 Pro", raising=False)
    monkeypatch.setattr(torch.backends.mps, "get_core_count", lambda: 19, raising=False)
    record = machine_record("mps")
    assert record["gpu"] == "Apple M2 Pro" and record["gpu_cores"] == 19 and "gpu_capability" not in record
    line = mixed_machines_line([record, {**record, "gpu": "Apple M3 Max", "gpu_cores": 40}])
    assert line is not None and "1 on Apple M2 Pro on " in line and "1 on Apple M3 Max on " in line


def test_an_mps_run_on_a_torch_that_names_no_device_still_says_mps(monkeypatch) -> None:
    monkeypatch.delattr(torch.backends.mps, "get_name", raising=False)
    monkeypatch.delattr(torch.backends.mps, "get_core_count", raising=False)
    record = machine_record("mps")
    assert record["gpu"] == "Apple MPS device" and "gpu_cores" not in record


def test_an_xpu_run_records_its_device_name_and_driver(monkeypatch) -> None:
    asked = []
    props = SimpleNamespace(name="Intel(R) Data Center GPU Max 1550", driver_version="1.3.27642")
    monkeypatch.setattr(torch.xpu, "get_device_properties", lambda dev: asked.append(dev) or props)
    record = machine_record("xpu:1")
    assert record["gpu"] == "Intel(R) Data Center GPU Max 1550" and record["gpu_driver"] == "1.3.27642"
    assert asked == [torch.device("xpu:1")]
    assert harness.machine.machine_label(record).startswith("Intel(R) Data Center GPU Max 1550 on ")
