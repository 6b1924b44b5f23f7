"""Each stored run records the machine that trained it (`Manifest.machine`, `harness.machine`): the
same seed trains apart at float rounding on another CPU kernel set or GPU, so a user comparing runs,
or sharing a store between machines, must be able to tell. The record is the training process's
(a worker's, under --executor local), never the driver's; manifests written before the field (and
before `versions`) read as unknown, never as the reader's machine, keep their checksum and are reused;
summary.json's runs carry it and the CLI says when the runs come from more than one kind of machine.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from harness.cli import main
from harness.executors.local import LocalExecutor
from harness.experiment import Experiment
from harness.jobs import Job, JobResult, run_job
from harness.machine import machine_record, mixed_machines_line
from harness.manifest import DIGEST_FIELD, Manifest, manifest_digest, package_versions

EPYC = {"cpu": "AMD EPYC 7763 64-Core Processor", "cpu_capability": "AVX2", "cpus": 2, "arch": "x86_64"}
XEON = {"cpu": "Intel(R) Xeon(R) Platinum 8480+", "cpu_capability": "AVX512", "cpus": 8, "arch": "x86_64"}


def _manifest(**kw) -> Manifest:
    return Manifest(spec={}, spec_hash="h", label="l", engine="single", device="cpu", threads=1, train_seconds=1.0,
                    train_flops=1, train_acc=1.0, test_acc=1.0, recorders={}, **kw)


def _older_file(manifest: Manifest, *absent: str) -> str:
    """manifest.json as a memprox before `absent` existed wrote it: without them, its checksum over the rest."""
    raw = json.loads(manifest.to_json())
    del raw[DIGEST_FIELD]
    for name in absent:
        del raw[name]
    return json.dumps({**raw, DIGEST_FIELD: manifest_digest(raw)})


# the manifest -----------------------------------------------------------------------------------
def test_the_machine_round_trips_and_its_checksum_covers_it() -> None:
    manifest = _manifest(machine=EPYC)
    assert Manifest.from_json(manifest.to_json()).machine == EPYC
    raw = json.loads(manifest.to_json())
    raw["machine"]["cpu_capability"] = "AVX512"  # another machine's claim: not trusted
    try:
        Manifest.from_json(json.dumps(raw))
    except ValueError as e:
        assert "checksum mismatch" in str(e)
    else:
        raise AssertionError("a changed machine record passed the manifest checksum")


def test_an_older_manifest_reads_as_an_unknown_machine_not_the_readers() -> None:
    """Written before `machine`: trusted (its checksum covers the fields as written), and unknown."""
    old = Manifest.from_json(_older_file(_manifest(machine=EPYC), "machine"))
    assert old.machine == {} and old.versions == package_versions()


def test_an_older_manifest_without_versions_or_created_reads_them_as_unknown_not_the_readers() -> None:
    """`versions` and `created` default to the making process's packages and clock: a manifest
    that lacks them read as the reader's (another memprox, torch, date), as if it had trained it."""
    new = _manifest()
    assert new.versions == package_versions() and new.created  # a new manifest: the making process's
    old = Manifest.from_json(_older_file(new, "versions", "created"))
    assert old.versions == {} and old.created == ""


def test_this_process_record_has_the_cpu_and_its_kernel_set_and_no_host_name() -> None:
    record = machine_record("cpu")
    assert record["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert record["cpus"] == os.cpu_count() and record["cpu"]
    assert "gpu" not in record
    assert os.uname().nodename not in json.dumps(record)


def test_a_cuda_run_records_its_gpu_and_compute_capability(monkeypatch) -> None:
    """The GPU of the run's device (mocked: the test machine may have none)."""
    asked = []
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda dev: asked.append(dev) or "NVIDIA H200")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda dev: (9, 0))
    record = machine_record("cuda:1")
    assert record["gpu"] == "NVIDIA H200" and record["gpu_capability"] == "9.0"
    assert asked == [torch.device("cuda:1")]
    line = mixed_machines_line([record, {**record, "gpu": "NVIDIA A100-SXM4-80GB", "gpu_capability": "8.0"}])
    assert line is not None and "NVIDIA H200 (9.0) on " in line and "NVIDIA A100-SXM4-80GB (8.0) on " in line


# the training process's record --------------------------------------------------------------------
def as_another_worker(job: Job) -> JobResult:
    """A worker's job function (imported by the worker from this module): its CPU probe names its pid."""
    import harness.machine

    harness.machine.cpu_model = lambda: f"worker pid {os.getpid()}"
    return run_job(job)


def test_the_record_is_made_by_the_worker_that_trains(make_config) -> None:
    cfg = make_config(epochs=1)
    exp = Experiment(cfg, executor=LocalExecutor(workers=1, progress=False, fn=as_another_worker))
    try:
        result = exp.run()
    finally:
        exp.executor.close()
    assert not result.failures
    (spec,) = exp.plan.runs
    cpu = exp.store.get(spec).manifest.machine["cpu"]
    assert cpu.startswith("worker pid ") and cpu != f"worker pid {os.getpid()}"
    assert exp.store.get(spec).manifest.machine["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    (row,) = json.loads((Path(cfg.out) / "summary.json").read_text())["runs"]
    assert row["machine"]["cpu"] == cpu


# mixed machines -----------------------------------------------------------------------------------
def _cli(folder: Path, capsys) -> str:
    code = main(["run", "--no-progress", "--executor", "inprocess", "--seeds", "0,1", "--noise-rates", "0.1",
                 "--tasks", "mislabeled", "--proxies", "csl", "--epochs", "1", "--device", "cpu",
                 "--store", str(folder / "store"), "--out", str(folder / "out")])
    err = capsys.readouterr().err
    assert code == 0, err
    return err


def test_runs_from_two_kinds_of_machine_are_said_once_and_one_kind_is_not(tmp_path, capsys, monkeypatch) -> None:
    err = _cli(tmp_path / "same", capsys)
    assert "kinds of machine" not in err  # both runs trained here
    machines = iter([EPYC, XEON])
    monkeypatch.setattr("harness.jobs.machine_record", lambda device, compiled=None: next(machines))
    err = _cli(tmp_path / "mixed", capsys)
    lines = [line for line in err.splitlines() if "kinds of machine" in line]
    assert len(lines) == 1, err
    assert "2 kinds of machine" in lines[0] and "AVX2 AMD EPYC" in lines[0] and "AVX512 Intel" in lines[0]
    assert "float rounding" in lines[0]
    summary = json.loads((tmp_path / "mixed" / "out" / "summary.json").read_text())
    assert sorted(r["machine"]["cpu_capability"] for r in summary["runs"]) == ["AVX2", "AVX512"]
    monkeypatch.undo()  # rerun here: both runs are reused, with the machines that trained them
    err = _cli(tmp_path / "mixed", capsys)
    assert "2 reused" in err and "2 kinds of machine" in err
    assert main(["store", "info", "--store", str(tmp_path / "mixed" / "store")]) == 0
    (line,) = [x for x in capsys.readouterr().out.splitlines() if x.startswith("machines:")]
    assert line == ("machines: 1 on AVX2 AMD EPYC 7763 64-Core Processor, 1 on AVX512 Intel(R) Xeon(R) Platinum "
                    "8480+ (more than one kind: their scores agree only up to float rounding)")


def test_unrecorded_machines_are_no_kind_of_their_own() -> None:
    assert mixed_machines_line([EPYC, EPYC]) is None
    assert mixed_machines_line([EPYC, {}]) is None  # an older run: unknown, not assumed to differ
    line = mixed_machines_line([EPYC, XEON, {}])
    assert line is not None and "3 runs" in line and "1 stored before machines were recorded" in line


# stored runs from before the field -----------------------------------------------------------------
def test_a_run_stored_before_the_field_is_reused_and_reads_as_unknown(make_config, capsys) -> None:
    cfg = make_config(epochs=1)
    exp = Experiment(cfg)
    assert len(exp.run().trained) == 1
    (spec,) = exp.plan.runs
    path = exp.store.get(spec).path / "manifest.json"
    path.write_text(_older_file(Manifest.from_json(path.read_bytes()), "machine", "versions"))
    again = Experiment(make_config(epochs=1, out=Path(cfg.out).parent / "again"))
    result = again.run()
    assert result.trained == [] and result.reused == [spec.label()]
    assert again.store.get(spec).manifest.machine == {} and result.machines == [{}]
    (row,) = json.loads((Path(again.cfg.out) / "summary.json").read_text())["runs"]
    assert row["machine"] == {}
    assert main(["store", "info", "--store", str(cfg.store)]) == 0
    assert "machines: 1 unrecorded (stored before memprox recorded machines)\n" in capsys.readouterr().out
