"""config27: an MPLBACKEND matplotlib does not know refuses only runs that will draw a figure (suspects
draws pictures of samples on image data only), and `--device` spellings that compute the same thing
are one experiment."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from _cli_process import TINY
from _cli_process import run_cli as _cli


def _table(tmp_path: Path) -> Path:
    """An `npz:` table of (N, D) float features: not images, so suspects draws no figure of it."""
    rng = np.random.default_rng(0)
    path = tmp_path / "table.npz"
    np.savez(path, x=rng.normal(size=(300, 6)).astype(np.float32), y=np.arange(300) % 3)
    return path


def test_suspects_on_a_table_runs_under_an_unknown_mplbackend_and_draws_nothing(tmp_path: Path) -> None:
    """`--tasks suspects` on an `npz:` table writes its CSVs and no figure, yet MPLBACKEND=qt4agg refused it
    before anything trained ("the suspects task imports matplotlib after training")."""
    out = tmp_path / "out"
    done = _cli(["run", *TINY, "--dataset", f"npz:{_table(tmp_path)}", "--tasks", "suspects", "--store",
                 str(tmp_path / "store"), "--out", str(out)], tmp_path, MPLBACKEND="qt4agg")
    assert done.returncode == 0, done.stderr
    assert (out / "suspects" / "suspects_seed0.csv").is_file()
    assert not (out / "figures").exists() or not any((out / "figures").iterdir())
    assert json.loads((out / "summary.json").read_text())["config"]["tasks"] == ["suspects"]


def test_suspects_on_images_is_still_refused_before_training(tmp_path: Path) -> None:
    """digits are 8x8 uint8 images: suspects draws them, so the backend is refused, now once the data are
    loaded, still before the store or --out is written."""
    done = _cli(["run", *TINY, "--dataset", "digits", "--tasks", "suspects", "--store", str(tmp_path / "store"),
                 "--out", str(tmp_path / "out")], tmp_path, MPLBACKEND="qt4agg")
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and lines[0].startswith("error: MPLBACKEND='qt4agg' is not a backend"), done.stderr
    assert "suspects task imports matplotlib" in lines[0]
    assert not (tmp_path / "store").exists() and not (tmp_path / "out").exists()


def test_tasks_that_draw_on_any_data_are_refused_before_the_data_load(monkeypatch) -> None:
    """theory and privacy draw on a table too: refused while the config is checked, without the data;
    suspects alone waits for them (images=None), and counts once they are images."""
    from harness.config_figures import check_figure_backend, images_only
    from harness.tasks import TASKS

    monkeypatch.setenv("MPLBACKEND", "qt4agg")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # importing it now raises ImportError: a check imported it
    assert [name for name in TASKS if images_only(TASKS[name])] == ["suspects"]
    assert check_figure_backend(("suspects", "mislabeled")) is None
    assert check_figure_backend(("suspects",), images=False) is None
    for tasks, images in ((("theory",), None), (("privacy", "suspects"), False), (("suspects",), True)):
        try:
            check_figure_backend(tasks, images=images)
        except ImportError:
            continue
        raise AssertionError(f"{tasks} with images={images} did not check the backend")


# --device and the experiment's identity ---------------------------------------------------------------
API_TINY = dict(dataset="digits", proxies="csl", tasks="mislabeled", seeds=1, noise_rates=[0.1], epochs=1,
                subset=120, bootstrap=0, progress=False, executor="inprocess")
NOISY = dict(noisy_labels="labels.npz:human", tasks="mislabeled", seeds=1)


def _machine(monkeypatch, gpus: int) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)


def _ids(**options) -> dict[str, str]:
    from harness.api import experiment_config
    from harness.config import ExperimentConfig, experiment_id

    return {device: experiment_id(ExperimentConfig(device=device, **options) if not options else
                                  experiment_config(device=device, **options))
            for device in ("auto", "cpu", "cuda", "cuda:0", "cuda:1", "CPU", "cuda:00")}


def test_spellings_of_one_device_kind_are_one_experiment(monkeypatch) -> None:
    """`--device cpu` after the default (`auto`, the CPU here) was "another experiment" on its own --out,
    and so was `cuda:0` after `cuda`: the id hashed the spelling. It hashes the kind now; a CPU and a GPU
    stay two experiments, and the kind's id is the same on every machine."""
    _machine(monkeypatch, 0)
    cpu_box = _ids()
    assert cpu_box["cpu"] == cpu_box["auto"] == "0938f621bdc8e982"  # the default's id, pinned in test_options
    assert cpu_box["cuda"] == cpu_box["cuda:0"] == cpu_box["cuda:1"] != cpu_box["cpu"]
    assert len({cpu_box["CPU"], cpu_box["cuda:00"], cpu_box["cpu"], cpu_box["cuda"]}) == 4  # refused: as spelled
    _machine(monkeypatch, 2)
    gpu_box = _ids()
    assert gpu_box["auto"] == gpu_box["cuda"] == gpu_box["cuda:0"] == gpu_box["cuda:1"] == cpu_box["cuda"]
    assert gpu_box["cpu"] == cpu_box["cpu"] != gpu_box["auto"]


def test_an_out_written_with_a_former_id_is_named_by_former_ids(monkeypatch) -> None:
    """Folders written before carry the id of the device as spelled: test_options pinned 970845f77635cff7
    for this `--device cpu` config, whose id is now the default's; `former_ids` names it (and the other
    spellings of the CPU here) for the --out check, and none is the id itself."""
    from harness.api import experiment_config
    from harness.config import experiment_id
    from harness.config_identity import former_ids

    _machine(monkeypatch, 0)
    cpu, auto = experiment_config(device="cpu", **NOISY), experiment_config(**NOISY)
    assert experiment_id(cpu) == experiment_id(auto) == "25b3dc9275839448"
    assert former_ids(cpu) == former_ids(auto) == ("970845f77635cff7",)  # "auto" hashes as before: not former
    assert former_ids(experiment_config(device="CPU", **NOISY)) == ()
    _machine(monkeypatch, 2)
    gpu = experiment_config(device="cuda:1", **NOISY)
    assert len(former_ids(gpu)) == 3 and experiment_id(gpu) not in former_ids(gpu)  # auto, cuda:0, cuda:1


def test_a_rerun_with_another_spelling_of_the_device_keeps_its_out(tmp_path) -> None:
    """The default run, then `--device cpu` into the same --out and --store: refused ("holds results of
    another experiment") until --overwrite, though it reused every run. Both orders."""
    from harness.api import run_experiment

    store = tmp_path / "store"
    first = run_experiment(**API_TINY, store=store, out=tmp_path / "a")
    again = run_experiment(**API_TINY, store=store, out=tmp_path / "a", device="cpu")
    assert (len(first.trained), len(again.trained), len(again.reused)) == (1, 0, 1)
    run_experiment(**API_TINY, store=store, out=tmp_path / "b", device="cpu")
    assert run_experiment(**API_TINY, store=store, out=tmp_path / "b").reused == again.reused
    records = [json.loads((tmp_path / o / "summary.json").read_text())["experiment"] for o in ("a", "b")]
    assert records[0] == records[1]


def test_runs_from_another_kind_of_device_are_said(recwarn) -> None:
    """The store's address leaves the device out: a CPU experiment read GPU runs (to rounding, not bitwise
    its own numbers) without a word. One line names them; runs of this kind, `cuda:1` as `cuda`, are quiet."""
    from types import SimpleNamespace

    import torch

    from harness.plan_checks import warn_other_devices

    class Spec(str):  # a RunSpec as the warning reads it: hashable, with a label
        def label(self) -> str:
            return str(self)

    def run(device: str, name: str) -> tuple:
        return Spec(name), SimpleNamespace(manifest=SimpleNamespace(device=device))

    runs: dict = dict([run("cuda:0", "seed0"), run("cpu", "seed1"), run("cuda:1", "seed2")])
    warn_other_devices({k: v for k, v in runs.items() if k != "seed1"}, torch.device("cuda"))
    assert not recwarn.list
    with pytest.warns(UserWarning) as caught:
        warn_other_devices(runs, torch.device("cpu"))
    assert [str(w.message) for w in caught] == [
        "2 run(s) read from the store (seed0, ...) were trained on cuda, this experiment trains on cpu: runs on "
        "another kind of device agree with its own to rounding, not bitwise, so these are not the numbers a fresh "
        "run here gives; pass --device cuda to match them, or another --store to retrain them"]


def test_an_out_written_under_a_former_id_stays_this_experiments(tmp_path) -> None:
    """A folder written before the device was hashed by its kind carries the id of its spelling: a rerun takes
    it as its own and marks it with the id it has now; another experiment's folder is still refused."""
    from harness.api import experiment_config, run_experiment
    from harness.config_identity import former_ids
    from harness.errors import HarnessError

    options = dict(**API_TINY, store=tmp_path / "store", out=tmp_path / "out", device="cpu")
    record = tmp_path / "out" / ".memprox-outputs.json"
    run_experiment(**options)
    new = json.loads(record.read_text())["experiment"]
    (old,) = former_ids(experiment_config(**options))
    record.write_text(record.read_text().replace(new, old))
    assert run_experiment(**{**options, "device": "auto"}).reused
    assert json.loads(record.read_text())["experiment"] == new
    record.write_text(record.read_text().replace(new, "0123456789abcdef"))
    with pytest.raises(HarnessError, match="holds results of another experiment"):
        run_experiment(**options)


def test_a_run_that_reads_gpu_trained_runs_says_so(tmp_path) -> None:
    """The planner calls the device check: a CPU experiment whose store holds the run as trained on CUDA
    (its manifest says so) reuses it, and the warning names the device to pass."""
    import warnings

    from harness.api import run_experiment
    from harness.manifest import Manifest

    options = dict(**API_TINY, store=tmp_path / "store", device="cpu")
    run_experiment(**options)
    (path,) = (tmp_path / "store" / "runs").glob("*/manifest.json")
    manifest = Manifest.from_json(path.read_text())
    manifest.device = "cuda:0"
    path.write_text(manifest.to_json())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert run_experiment(**options).reused
    said = [str(w.message) for w in caught if "were trained on cuda" in str(w.message)]
    assert len(said) == 1 and "this experiment trains on cpu" in said[0] and "device='cuda'" in said[0]  # API words


def test_a_relative_out_in_a_deleted_current_folder_is_one_error_in_the_api(tmp_path, monkeypatch) -> None:
    """The API's config check read the relative --out's absolute path first, and a deleted current folder
    raised a bare FileNotFoundError there; check_out's one line names the cause, as the CLI says it."""
    from harness.api import run_experiment
    from harness.errors import HarnessError

    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    with pytest.raises(HarnessError, match="current folder"):
        run_experiment(**API_TINY, out="rel", store=tmp_path / "store")
    assert not (tmp_path / "store").exists()
