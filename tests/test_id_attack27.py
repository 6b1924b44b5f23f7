"""idattack27: an --out is this experiment's by its id (or a former one) *and* the kind of device its outputs were
computed on. The CPU's id is the one `auto` had on any machine, and on a GPU machine `auto` is a former id of CUDA:
by the id alone a GPU experiment took a CPU folder as its own (and `--device cpu` a GPU machine's `auto` folder),
replacing the other device's outputs without --overwrite."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

API_TINY = dict(dataset="digits", proxies="csl", tasks="mislabeled", seeds=1, noise_rates=[0.1], epochs=1,
                subset=120, bootstrap=0, progress=False, executor="inprocess")


def _gpu_machine(monkeypatch, gpus: int = 1) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)


def _cpu_folder(tmp_path: Path) -> dict:
    """The default experiment run here (no CUDA): its --out, marked with the CPU's id, computed on cpu."""
    from harness.api import run_experiment

    options = dict(**API_TINY, store=tmp_path / "store", out=tmp_path / "out")
    run_experiment(**options)
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["device"] == "cpu"
    return options


def _ids(options: dict, device: str) -> tuple[str, tuple[str, ...]]:
    from harness.api import experiment_config
    from harness.config_identity import experiment_id, former_ids

    cfg = experiment_config(**{**options, "device": device})
    return experiment_id(cfg), former_ids(cfg)


def test_a_gpu_experiment_does_not_take_a_cpu_folder_as_its_own(tmp_path, monkeypatch) -> None:
    """On a GPU machine `--device cuda` (and `auto`, `cuda:0`) named the CPU folder's id as a former id of its own:
    check_out passed it without --overwrite. Now refused, saying which device computed it; the CPU experiment
    still takes it, and so does a folder that does not say its device (no summary.json: the id decides)."""
    from harness.errors import HarnessError
    from harness.outputs import check_out

    options = _cpu_folder(tmp_path)
    out, store = tmp_path / "out", tmp_path / "store"
    owner = json.loads((out / ".memprox-outputs.json").read_text())["experiment"]
    cpu = _ids(options, "cpu")
    _gpu_machine(monkeypatch)
    for spelling in ("cuda", "auto", "cuda:0"):
        identity, former = _ids(options, spelling)
        assert owner in former  # what took the folder
        with pytest.raises(HarnessError, match=r"holds results of another experiment \(computed on cpu; this one "
                                               r"trains on cuda"):
            check_out(out, identity, False, store, folders=["mislabeled"], former=former, device="cuda")
        check_out(out, identity, True, store, folders=["mislabeled"], former=former, device="cuda")  # --overwrite
    check_out(out, *cpu[:1], False, store, folders=["mislabeled"], former=cpu[1], device="cpu")
    (out / "summary.json").rename(tmp_path / "summary.json")
    check_out(out, *_ids(options, "cuda")[:1], False, store, former=_ids(options, "cuda")[1], device="cuda")


def test_publish_into_a_cpu_folder_from_a_gpu_experiment_is_refused(tmp_path, monkeypatch) -> None:
    """publish (after training) asked the id alone too: the CPU folder's outputs were swapped out."""
    from harness.errors import StorageError
    from harness.outputs import publish, write_record

    options = _cpu_folder(tmp_path)
    out = tmp_path / "out"
    before = (out / "leaderboard.csv").read_bytes()
    _gpu_machine(monkeypatch)
    identity, former = _ids(options, "cuda")
    tmp = tmp_path / "staged"  # not named as a staging folder: clean_stale would take it for a killed one
    tmp.mkdir()
    (tmp / "leaderboard.csv").write_text("proxy\ngpu\n")
    (tmp / "summary.json").write_text(json.dumps({"device": "cuda"}))
    write_record(tmp, identity)
    with pytest.raises(StorageError, match="got another experiment's results"):
        publish(tmp, out, identity, False, former, "cuda")
    assert (out / "leaderboard.csv").read_bytes() == before
    publish(tmp, out, identity, True, former, "cuda")  # --overwrite
    assert (out / "leaderboard.csv").read_text() == "proxy\ngpu\n"


def _as_if_computed_on(out: Path, device: str) -> None:
    """The folder as a GPU machine's `auto` run wrote it before 5 December 2026: the same id (`auto` was hashed as
    spelled), its summary saying the device, the record's checksum to match."""
    summary = out / "summary.json"
    summary.write_text(json.dumps({**json.loads(summary.read_text()), "device": device}, indent=1))
    record = json.loads((out / ".memprox-outputs.json").read_text())
    record["files"]["summary.json"] = hashlib.sha256(summary.read_bytes()).hexdigest()
    (out / ".memprox-outputs.json").write_text(json.dumps(record, indent=1))


def test_a_cpu_experiment_does_not_replace_a_gpu_machines_auto_folder(tmp_path) -> None:
    """`--device cpu` hashes as `auto` now: on a GPU machine it took the folder of an `auto` run there (CUDA's
    results) as its own and replaced them, where it was refused before its id changed. Refused now (before
    training once the experiment passes its device to check_out, at publish until then); the GPU's outputs stay."""
    from harness.api import run_experiment

    options = _cpu_folder(tmp_path)
    out = tmp_path / "out"
    _as_if_computed_on(out, "cuda")
    kept = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with pytest.raises(Exception, match="results of another experiment|another experiment's results"):
        run_experiment(**{**options, "device": "cpu"})  # check_out's line once the device is passed, else publish's
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == kept
    assert json.loads((out / "summary.json").read_text())["device"] == "cuda"
    assert run_experiment(**{**options, "device": "cpu", "overwrite": True}).reused
    assert json.loads((out / "summary.json").read_text())["device"] == "cpu"


def test_a_summary_that_is_not_a_regular_file_does_not_hang_the_check(tmp_path) -> None:
    """The device is read from summary.json only where it is a regular file: a FIFO in its place blocked the
    check (opening it waits for a writer); the changed file is named instead."""
    import os
    import threading

    from harness.errors import HarnessError
    from harness.outputs import check_out

    options = _cpu_folder(tmp_path)
    out = tmp_path / "out"
    (out / "summary.json").unlink()
    os.mkfifo(out / "summary.json")
    caught: list[BaseException] = []

    def check() -> None:
        try:
            check_out(out, *_ids(options, "cpu")[:1], False, tmp_path / "store", former=_ids(options, "cpu")[1],
                      device="cpu")
        except BaseException as e:  # noqa: BLE001  (handed to the test thread)
            caught.append(e)

    worker = threading.Thread(target=check, daemon=True)
    worker.start()
    worker.join(20)
    if worker.is_alive():  # let the blocked open return before failing
        with open(out / "summary.json", "w"):
            pass
        pytest.fail("check_out blocked on a FIFO named summary.json")
    assert len(caught) == 1 and isinstance(caught[0], HarnessError)
    assert "summary.json was changed after memprox wrote it" in str(caught[0])


def test_a_former_id_folder_of_a_preset_cut_dataset_is_published_into(tmp_path) -> None:
    """quick's 4,000-image subset on a folder of 80 images: the experiment drops the subset after its identity is
    taken, and write() asked former_ids of that other config. check_out took the folder an older memprox wrote with
    `--device cpu` (a former id), the runs trained, and publish refused it ("got another experiment's results")."""
    from PIL import Image

    from harness.api import experiment_config, run_experiment
    from harness.config_identity import experiment_id, former_ids

    rng = np.random.default_rng(0)
    for c in range(2):
        (tmp_path / "imgs" / f"c{c}").mkdir(parents=True)
        for i in range(40):
            Image.fromarray(rng.integers(0, 255, size=(8, 8, 3), dtype=np.uint8)).save(tmp_path / "imgs" / f"c{c}" /
                                                                                     f"{i}.png")
    options = dict(dataset=f"imagefolder:{tmp_path / 'imgs'}", preset="quick", model="mlp", proxies="csl",
                   tasks="mislabeled", seeds=1, noise_rates=[0.1], epochs=1, bootstrap=0, progress=False,
                   executor="inprocess", store=tmp_path / "store", out=tmp_path / "out", device="cpu")
    with pytest.warns(UserWarning, match="preset's subset of 4000"):
        run_experiment(**options)
    cfg = experiment_config(**options)
    assert cfg.subset == 4000
    record = tmp_path / "out" / ".memprox-outputs.json"
    (old,) = former_ids(cfg)
    record.write_text(record.read_text().replace(experiment_id(cfg), old))
    with pytest.warns(UserWarning, match="preset's subset of 4000"):
        again = run_experiment(**options)
    assert (len(again.trained), len(again.reused)) == (0, 1)
    assert json.loads(record.read_text())["experiment"] == experiment_id(cfg)


def test_a_summary_changed_by_hand_is_named_not_read_for_its_device(tmp_path) -> None:
    """The device is memprox's word only in the summary.json it wrote: one edited since (its device now says cuda)
    is the user's file, named as changed; it was read, and the folder called another experiment's."""
    from harness.errors import HarnessError
    from harness.outputs import check_out

    options = _cpu_folder(tmp_path)
    out = tmp_path / "out"
    summary = out / "summary.json"
    summary.write_text(json.dumps({**json.loads(summary.read_text()), "device": "cuda"}))
    identity, former = _ids(options, "cpu")
    with pytest.raises(HarnessError, match="summary.json was changed after memprox wrote it"):
        check_out(out, identity, False, tmp_path / "store", former=former, device="cpu")
