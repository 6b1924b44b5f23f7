"""The machine record across resumes and accelerators (`harness.machine`). A run killed and resumed
from its checkpoint on another machine recorded only the machine that finished it; an MPS or XPU run
recorded no accelerator; ARM Linux, whose /proc/cpuinfo has no `model name`, recorded its CPU as
"unknown". Each case here failed on the code before the fix."""

from __future__ import annotations

import io
import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from test_kill_fuzz6 import _checkpointed_at

import harness.machine
from harness.cli import main
from harness.experiment import Experiment
from harness.jobs import Job, run_job
from harness.machine import machine_record, mixed_machines_line, run_label, trained_before, trained_by
from harness.manifest import DIGEST_FIELD, Manifest, manifest_digest
from harness.store import RunStore

REPO = Path(__file__).resolve().parents[1]
#: Another machine than any this suite runs on: the one a killed process "trained" on.
ELSEWHERE = {"cpu": "Fake CPU of the killed process", "cpu_capability": "AVX2", "cpus": 64, "arch": "x86_64"}
EPYC = {"cpu": "AMD EPYC 7763 64-Core Processor", "cpu_capability": "AVX2", "cpus": 2, "arch": "x86_64"}
XEON = {"cpu": "Intel(R) Xeon(R) Platinum 8480+", "cpu_capability": "AVX512", "cpus": 8, "arch": "x86_64"}


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


@pytest.mark.parametrize(("answer", "expected"), [
    (subprocess.CompletedProcess([], 0, "Apple M2 Pro\n", ""), "Apple M2 Pro"),
    (subprocess.CompletedProcess([], 1, "", "unknown oid"), "arm"),  # sysctl without the key
    (FileNotFoundError("sysctl"), "arm"),
], ids=["brand", "no_key", "no_sysctl"])
def test_a_mac_cpu_is_named_by_sysctl_not_by_platform_processor(monkeypatch, answer, expected) -> None:
    """macOS has no /proc/cpuinfo and platform.processor() says only "arm": every Apple chip read alike."""
    _files(monkeypatch, {})
    monkeypatch.setattr(harness.machine.platform, "processor", lambda: "arm")
    monkeypatch.setattr(harness.machine.platform, "system", lambda: "Darwin")
    asked: list[list[str]] = []

    def fake_run(cmd, **kwargs):
        asked.append(cmd)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    monkeypatch.setattr(subprocess, "run", fake_run)
    assert harness.machine.cpu_model() == expected
    assert asked == [["sysctl", "-n", "machdep.cpu.brand_string"]]


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


# the record across a resume -----------------------------------------------------------------------
def test_a_resume_on_the_same_machine_records_what_an_uninterrupted_run_does() -> None:
    """Its checkpoint's machine and this one merge: no `epochs`, no `earlier`, as before resumes."""
    state = {"epoch": 2, "machine": trained_by([], EPYC, 2)}
    assert trained_by(trained_before(state), EPYC, 4) == EPYC
    assert trained_by(trained_before(None), EPYC, 4) == EPYC


def test_a_resume_on_another_machine_records_both_in_order_with_their_epochs() -> None:
    first = {"epoch": 2, "machine": trained_by([], EPYC, 2)}
    record = trained_by(trained_before(first), XEON, 4)
    assert record == {**XEON, "epochs": [3, 4], "earlier": [{**EPYC, "epochs": [1, 2]}]}
    # killed again at epoch 3 on the Xeon, finished on the EPYC: three stretches, in order
    second = {"epoch": 3, "machine": trained_by(trained_before(first), XEON, 3)}
    record = trained_by(trained_before(second), EPYC, 5)
    assert record == {**EPYC, "epochs": [4, 5], "earlier": [{**EPYC, "epochs": [1, 2]}, {**XEON, "epochs": [3, 3]}]}
    assert run_label(record) == ("AVX2 AMD EPYC 7763 64-Core Processor then AVX512 Intel(R) Xeon(R) Platinum 8480+ "
                                 "then AVX2 AMD EPYC 7763 64-Core Processor")


def test_an_older_checkpoint_makes_its_epochs_an_unrecorded_machine_not_this_one() -> None:
    record = trained_by(trained_before({"epoch": 3}), EPYC, 4)
    assert record == {**EPYC, "epochs": [4, 4], "earlier": [{"epochs": [1, 3]}]}
    assert run_label(record) == "an unrecorded machine then AVX2 AMD EPYC 7763 64-Core Processor"
    assert mixed_machines_line([record, EPYC]) is None  # unknown, never assumed to differ


def test_runs_each_resumed_on_another_kind_are_mixed_though_all_finished_on_one() -> None:
    """Before, only the finishing machine counted: two runs begun on an EPYC and finished on a Xeon
    read as one kind, so no line said that their floats are neither machine's."""
    moved = {**XEON, "epochs": [3, 4], "earlier": [{**EPYC, "epochs": [1, 2]}]}  # as trained_by makes it
    line = mixed_machines_line([moved, moved])
    assert line == ("runs: the 2 runs used were trained on 2 kinds of machine (2 on AVX2 AMD EPYC 7763 64-Core "
                    "Processor then AVX512 Intel(R) Xeon(R) Platinum 8480+): scores agree across them only up to "
                    "float rounding")
    assert mixed_machines_line([moved]) is not None and "the 1 run used was trained on 2 kinds" in str(
        mixed_machines_line([moved]))


def test_a_manifest_with_earlier_machines_round_trips_and_a_malformed_one_is_refused() -> None:
    moved = {**XEON, "epochs": [3, 4], "earlier": [{**EPYC, "epochs": [1, 2]}]}
    manifest = Manifest(spec={}, spec_hash="h", label="l", engine="single", device="cpu", threads=1,
                        train_seconds=1.0, train_flops=1, train_acc=1.0, test_acc=1.0, recorders={}, machine=moved)
    assert Manifest.from_json(manifest.to_json()).machine == moved
    raw = json.loads(manifest.to_json())
    del raw[DIGEST_FIELD]
    raw["machine"]["earlier"] = "an EPYC"
    with pytest.raises(ValueError, match="machine.earlier is not a list"):
        Manifest.from_json(json.dumps({**raw, DIGEST_FIELD: manifest_digest(raw)}))


# a real kill and resume ---------------------------------------------------------------------------
_CHILD = """
import pickle, sys, time
import harness.jobs
from harness.store import RunStore

harness.jobs.machine_record = lambda device, compiled=None: {machine!r}  # this process is "another machine"
real = RunStore.save_checkpoint

def save(self, spec, state, keys):
    real(self, spec, state, keys)
    if state["epoch"] == 2:  # killed here, at the latest 60 s on
        print("checkpointed", flush=True)
        time.sleep(60)

RunStore.save_checkpoint = save
with open(sys.argv[1], "rb") as f:
    harness.jobs.run_job(pickle.load(f))
"""


def _killed_after_epoch_2(exp: Experiment, tmp_path: Path) -> None:
    """The experiment's one run trained by another process, posing as `ELSEWHERE`, killed with
    SIGKILL right after its epoch-2 checkpoint."""
    (spec,) = exp.plan.runs
    exp.store.create()
    job = Job(specs=(spec,), requests=tuple(sorted(exp.plan.runs[spec], key=lambda r: r.key)), engine="single",
              source=exp.source, checkpoint_root=str(exp.store.root), checkpoint_every_s=0)
    (tmp_path / "job.pkl").write_bytes(pickle.dumps(job))
    (tmp_path / "child.py").write_text(textwrap.dedent(_CHILD.format(machine=ELSEWHERE)))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, str(tmp_path / "child.py"), str(tmp_path / "job.pkl")], cwd=REPO,
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "checkpointed"
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        child.kill()
        child.wait()
    assert exp.store.checkpoint_path(spec).exists()


def test_a_run_killed_on_one_machine_and_resumed_on_another_records_both(make_config, tmp_path, capsys) -> None:
    cfg = make_config(epochs=4)
    _killed_after_epoch_2(Experiment(cfg), tmp_path)
    exp = Experiment(cfg)  # resumed here, in this process
    result = exp.run()
    (spec,) = exp.plan.runs
    assert result.resumed == {spec.label(): 2}
    here = machine_record("cpu", compiled=False)
    expected = {**here, "epochs": [3, 4], "earlier": [{**ELSEWHERE, "epochs": [1, 2]}]}
    assert exp.store.get(spec).manifest.machine == expected
    (row,) = json.loads((Path(cfg.out) / "summary.json").read_text())["runs"]
    assert row["machine"] == expected
    line = mixed_machines_line(result.machines)
    assert line is not None and f"1 on AVX2 Fake CPU of the killed process then {here['cpu_capability']}" in line
    capsys.readouterr()
    assert main(["store", "info", "--store", str(cfg.store)]) == 0
    (info,) = [x for x in capsys.readouterr().out.splitlines() if x.startswith("machines:")]
    assert info == (f"machines: 1 on AVX2 Fake CPU of the killed process then {harness.machine.machine_label(here)} "
                    "(more than one kind: their scores agree only up to float rounding)")


def test_a_checkpoint_written_before_machines_were_recorded_still_resumes(make_config) -> None:
    """A checkpoint as the previous memprox wrote it (the training loop's state, no `machine`): it
    resumes, and its epochs are an unrecorded machine, not this one."""
    exp = Experiment(make_config(epochs=4))
    job, requests = _checkpointed_at(exp, 3)  # the training loop's own state, as the store keeps it
    (spec,) = job.specs
    assert "machine" not in exp.store.load_checkpoint(spec, [r.key for r in requests])
    result = run_job(job)
    assert result.resumed == {spec: 3}
    _, manifest = result.outputs[spec]
    assert manifest.machine == {**machine_record("cpu", compiled=False), "epochs": [4, 4],
                                "earlier": [{"epochs": [1, 3]}]}


def test_an_ensemble_chunk_resumed_on_another_machine_records_both_for_every_member(monkeypatch, tmp_path) -> None:
    from baselines.stability import stability_specs
    from harness.datasets import load_dataset
    from harness.ensemble_checkpoint import ChunkCheckpoints
    from harness.jobs import DataSource
    from harness.recipe import Recipe
    from harness.recorders import EVAL_LAST
    from harness.runspec import DataSpec, RunSpec

    recipe = Recipe(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=0.0, batch_size=128, epochs=4,
                    schedule="cosine", milestones=(), augment=False)
    data = DataSpec(dataset="digits", dataset_sha=load_dataset("digits").fingerprint)
    specs = stability_specs(RunSpec(data=data, model="mlp", recipe=recipe, seed=0), 3, 0.7)
    job = Job(specs=tuple(specs), requests=(EVAL_LAST,), engine="ensemble", source=DataSource("digits"),
              checkpoint_root=str(tmp_path / "store"), checkpoint_every_s=1e-9)
    real = ChunkCheckpoints.save

    def killed_after_epoch_2(self, chunk, stacked, progress) -> None:
        real(self, chunk, stacked, progress)
        if progress.epoch == 2:
            raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(ChunkCheckpoints, "save", killed_after_epoch_2)
        m.setattr("harness.jobs.machine_record", lambda device, compiled=None: dict(ELSEWHERE))
        with pytest.raises(KeyboardInterrupt):
            run_job(job)
    result = run_job(job)  # resumed here
    assert result.resumed == dict.fromkeys(specs, 2)
    expected = {**machine_record("cpu"), "epochs": [3, 4], "earlier": [{**ELSEWHERE, "epochs": [1, 2]}]}
    assert [result.outputs[s][1].machine for s in specs] == [expected] * 3
    store = RunStore(tmp_path / "store")
    for spec, (arrays, manifest) in result.outputs.items():
        store.put(spec, arrays, manifest)
    assert store.get(specs[0]).manifest.machine == expected
