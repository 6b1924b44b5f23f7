"""smalls28: an --out written with `--device cuda:N` is the experiment's own on a machine with fewer GPUs. Its owner is
the id `cuda:N` had while the device was hashed as spelled; `former_ids` listed `cuda:i` for this machine's GPUs only,
so a folder written on GPU 5 of 8 was "another experiment" on a 2-GPU machine and needed --overwrite. The spelling
its summary.json records counts now, for CUDA only and only where the hash matches the owner."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

NOISY = dict(noisy_labels="labels.npz:human", tasks=("mislabeled",), seeds=(0,))


def _machine(monkeypatch, gpus: int) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)


def _cfg(out: Path, device: str, **changes):
    from harness.config import ExperimentConfig

    return ExperimentConfig(device=device, out=str(out), **{**NOISY, **changes})


def _folder(out: Path, owner: str, summary: object) -> None:
    """An --out as memprox writes it, marked with `owner`; `summary`: summary.json's device (a str of JSON text when
    bytes, left out when None)."""
    from harness.outputs import write_record

    out.mkdir(parents=True, exist_ok=True)
    (out / "leaderboard.csv").write_text("proxy\ncsl\n")
    if isinstance(summary, bytes):
        (out / "summary.json").write_bytes(summary)
    elif summary is not None:
        (out / "summary.json").write_text(json.dumps({"experiment": owner, "device": summary}))
    write_record(out, owner)


def _check(out: Path, cfg, device: str = "cuda") -> None:
    from harness.config_identity import experiment_id, former_ids
    from harness.outputs import check_out

    check_out(out, experiment_id(cfg), False, out.parent / "store", former=former_ids(cfg), device=device)


def _gpu5_id(tmp_path: Path, monkeypatch, **changes) -> str:
    """The id `--device cuda:5` had before ids hashed the kind, told by `former_ids` itself: the one it lists on a
    6-GPU machine and not on a 5-GPU one (no folder to read: an --out that does not exist)."""
    from harness.config_identity import former_ids

    nowhere = _cfg(tmp_path / "nowhere", "cuda", **changes)
    _machine(monkeypatch, 6)
    six = set(former_ids(nowhere))
    _machine(monkeypatch, 5)
    (old,) = six - set(former_ids(nowhere))
    return old


def test_a_folder_written_on_gpu_5_of_8_is_its_own_on_a_two_gpu_machine(tmp_path, monkeypatch) -> None:
    """Failed before: check_out said "holds results of another experiment" for every spelling on 2 GPUs."""
    from harness.config_identity import former_ids

    out = tmp_path / "out"
    old = _gpu5_id(tmp_path, monkeypatch)
    _folder(out, old, "cuda:5")
    _machine(monkeypatch, 2)
    for spelling in ("cuda", "auto", "cuda:0", "cuda:1"):
        assert old in former_ids(_cfg(out, spelling))
        _check(out, _cfg(out, spelling))
    assert old not in former_ids(_cfg(tmp_path / "nowhere", "cuda"))  # it is the folder's word that counts
    _machine(monkeypatch, 8)  # where it was written: listed as before, once
    assert former_ids(_cfg(out, "cuda")).count(old) == 1


@pytest.mark.parametrize("device", ["cuda:05", "cuda:-1", "cuda:5 ", " cuda:5", "cuda:5\n", "CUDA:5", "cuda:5:0",
                                    "cuda:", "cuda:+5", "cuda:٥", "cpu", "mps", "meta", "cpu:5"])
def test_a_crafted_device_string_adds_no_id(tmp_path, monkeypatch, device: str) -> None:
    """A spelling `--device` refuses, or another kind's, is never hashed into a former id, even where the folder's
    owner is this config hashed with it (the worst case: a folder crafted to match)."""
    from harness.config_identity import _hashed, former_ids
    from harness.errors import HarnessError

    out = tmp_path / "out"
    cfg = _cfg(out, "cuda")
    crafted = _hashed(cfg, device)
    _folder(out, crafted, device)
    _machine(monkeypatch, 2)
    assert crafted not in former_ids(cfg)
    assert former_ids(cfg) == former_ids(_cfg(tmp_path / "nowhere", "cuda"))
    with pytest.raises(HarnessError, match="holds results of another experiment"):
        _check(out, cfg)


@pytest.mark.parametrize("summary", [None, b"", b"{not json", b"\xff\xfe", b"[\"cuda:5\"]", b"{\"device\": 5}",
                                     b"{\"device\": [\"cuda:5\"]}", b"{\"device\": null}", b"[" * 100_000,
                                     b"{\"device\": " + b"[" * 100_000 + b"]" * 100_000 + b"}",
                                     b"{\"config\": {\"device\": \"cuda:5\"}}"])
def test_a_missing_or_corrupt_summary_adds_no_id_and_raises_nothing(tmp_path, monkeypatch, summary) -> None:
    """No device read, no id added: the folder of GPU 5 stays another experiment's here, refused with the usual line
    (a summary nested too deep for json raised RecursionError, a traceback, once read)."""
    from harness.config_identity import former_ids
    from harness.errors import HarnessError
    from harness.outputs_place import _trained_on

    out = tmp_path / "out"
    old = _gpu5_id(tmp_path, monkeypatch)
    _folder(out, old, summary)
    _machine(monkeypatch, 2)
    assert old not in former_ids(_cfg(out, "cuda"))
    assert _trained_on(out) is None
    with pytest.raises(HarnessError, match="holds results of another experiment"):
        _check(out, _cfg(out, "cuda"))


def test_a_summary_that_is_a_link_a_folder_or_a_fifo_is_not_read(tmp_path, monkeypatch) -> None:
    """Only a regular file in the folder itself: a link to a file saying cuda:5 is not its word, and a FIFO would
    block the read (check_out names the changed file; the point here is that former_ids returns)."""
    from harness.config_identity import former_ids

    out = tmp_path / "out"
    old = _gpu5_id(tmp_path, monkeypatch)
    _folder(out, old, None)
    (tmp_path / "elsewhere.json").write_text(json.dumps({"device": "cuda:5"}))
    _machine(monkeypatch, 2)
    (out / "summary.json").symlink_to(tmp_path / "elsewhere.json")
    assert old not in former_ids(_cfg(out, "cuda"))
    (out / "summary.json").unlink()
    (out / "summary.json").mkdir()
    assert old not in former_ids(_cfg(out, "cuda"))
    (out / "summary.json").rmdir()
    os.mkfifo(out / "summary.json")
    assert old not in former_ids(_cfg(out, "cuda"))


def test_another_experiments_gpu_5_folder_is_still_refused(tmp_path, monkeypatch) -> None:
    """The spelling adds the id this config had with it: a folder of another experiment (another seed) written on
    GPU 5 is not taken, though its summary says cuda:5."""
    from harness.errors import HarnessError

    out = tmp_path / "out"
    _folder(out, _gpu5_id(tmp_path, monkeypatch, seeds=(1,)), "cuda:5")
    _machine(monkeypatch, 2)
    with pytest.raises(HarnessError, match="holds results of another experiment"):
        _check(out, _cfg(out, "cuda"))


def test_a_gpu_5_folder_is_not_a_cpu_experiments_nor_a_cpu_folder_a_gpu_ones(tmp_path, monkeypatch) -> None:
    """Another kind of device stays another experiment: `--device cpu` (here and on a CPU box) does not read the
    folder's cuda:5, and a CUDA experiment does not take the folder `--device cpu` wrote before ids hashed the kind
    (its owner: this config hashed with "cpu"), however its summary spells the device."""
    from harness.config_identity import _hashed, former_ids
    from harness.errors import HarnessError

    out = tmp_path / "out"
    old = _gpu5_id(tmp_path, monkeypatch)
    _folder(out, old, "cuda:5")
    for gpus in (2, 0):
        _machine(monkeypatch, gpus)
        assert old not in former_ids(_cfg(out, "cpu"))
        with pytest.raises(HarnessError, match="holds results of another experiment"):
            _check(out, _cfg(out, "cpu"), device="cpu")
    _machine(monkeypatch, 2)
    for written in ("cpu", "cuda:0"):
        cpu_old = _hashed(_cfg(out, "cpu"), "cpu")
        _folder(out, cpu_old, written)
        assert cpu_old not in former_ids(_cfg(out, "cuda"))
        with pytest.raises(HarnessError, match="holds results of another experiment"):
            _check(out, _cfg(out, "cuda"))
