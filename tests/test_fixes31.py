"""An executor plugin whose import calls `sys.exit()` (a script's `parse_args()` at module level) ended
memprox with the plugin's exit status and no word of which plugin: it is named like any failed import."""

from __future__ import annotations

import importlib.metadata
import sys

import pytest

import harness.executors as executors
from harness.errors import HarnessError


def test_an_executor_plugin_that_exits_at_import_is_named(monkeypatch, tmp_path) -> None:
    (tmp_path / "exiting_executor31.py").write_text("import sys\nsys.exit(2)\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "exiting_executor31", raising=False)
    ep = importlib.metadata.EntryPoint("exiting", "exiting_executor31:Exec", executors.ENTRY_POINT_GROUP)
    real = importlib.metadata.entry_points
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda group=None, **kw: [ep] if group == ep.group else real(group=group, **kw))
    for builtin in ("local", "inprocess"):
        executors.executor_class(builtin)
    monkeypatch.setattr(executors, "EXECUTORS", type(executors.EXECUTORS)("executor"))
    named = r"executor plugin 'exiting' \(exiting_executor31:Exec\) exited while imported \(SystemExit: 2;"
    with pytest.raises(HarnessError, match=named):
        executors.executor_class("exiting")


def test_duplicate_files_is_a_reserved_proxy_name() -> None:
    """The suspects CSVs' `duplicate_files` column (image folders only, so the digits-based reserved-names
    check cannot see it) would have been overwritten by a proxy of that name's scores."""
    from proxies.base import Proxy
    from proxies.registry import register_proxy

    class DuplicateFiles(Proxy):
        name = "duplicate_files"
        description = "collides with a suspects column"
        citation = "none"

        def score(self, records, ctx):  # pragma: no cover - never registered
            raise AssertionError

    with pytest.raises(TypeError, match="'duplicate_files', which the per-sample tables use"):
        register_proxy(DuplicateFiles)


def test_a_margin_recorded_for_some_batches_only_is_named_as_such() -> None:
    """One update() without logits left holes in the margin rows: the refusal said the tracker 'did not
    record' train_margin, which it had, for the other batches."""
    import torch

    from harness.tracker import SampleTracker

    tracker = SampleTracker(4)
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    for _ in range(2):
        tracker.update(torch.tensor([0, 1]), logits=logits, labels=torch.tensor([0, 1]))
        tracker.update(torch.tensor([2, 3]), losses=torch.tensor([0.3, 0.4]))
        tracker.end_epoch()
    with pytest.raises(HarnessError, match="recorded for only some batches: some update\\(\\) calls had no logits"):
        tracker.scores("all")


def test_a_data_folder_the_user_may_not_enter_is_one_line_not_a_traceback(tmp_path) -> None:
    """`--dataset imagefolder:~otheruser/data` (a 0700 home on the way): check_out's `is_dir()` of the data
    folders raised PermissionError, a traceback with exit 1, before the loader could say anything."""
    import os
    import shutil
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv")
    work = Path(tempfile.mkdtemp(prefix="memprox-fixes31-"))  # pytest's tmp folders are 0700: nobody may not enter
    try:
        os.chmod(work, 0o777)
        closed = work / "closed"
        (closed / "data" / "a").mkdir(parents=True)
        os.chmod(closed, 0o700)  # root's
        nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable]
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "HOME": str(work),
               "MEMPROX_CACHE": str(work / "cache")}
        if subprocess.run([*nobody, "-c", "pass"], env=env, cwd=work, capture_output=True).returncode != 0:
            pytest.skip("the user nobody may not run this interpreter")
        proc = subprocess.run([*nobody, "-m", "harness", "run", "--dataset", f"imagefolder:{closed / 'data'}",
                               "--proxies", "csl", "--epochs", "1", "--executor", "inprocess",
                               "--out", str(work / "o")], env=env, cwd=work, capture_output=True, text=True,
                              timeout=300)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: the data path {closed / 'data'} cannot be reached: this user may not enter {closed} (Permission "
        "denied); pass data in a folder you may enter, or ask its owner")


def test_a_run_held_under_another_model_digest_is_named_before_it_trains_again(make_config, monkeypatch) -> None:
    """The planner called no notice for runs that train again because the store holds them under another digest
    of the model's code (an edit, or an upgrade whose digest reads more of it): '1 trained' and nothing said;
    the model's digest is also computed once per experiment now, not once per setting."""
    import warnings

    import harness.planner as planner
    from harness.experiment import Experiment

    calls: list[str] = []

    def digest(sha: str):
        return lambda name: calls.append(name) or sha

    cfg = make_config(seeds=(0, 1))
    monkeypatch.setattr(planner, "model_fingerprint", digest("aaaaaaaaaaaaaaaa"))
    Experiment(cfg).run()
    assert calls == ["mlp"]  # two settings, one digest
    monkeypatch.setattr(planner, "model_fingerprint", digest("bbbbbbbbbbbbbbbb"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Experiment(cfg).run()
    said = [str(w.message) for w in caught if "another digest of the model's code" in str(w.message)]
    assert len(said) == 1 and said[0].startswith("2 run(s) (") and "(aaaaaaaaaaaaaaaa; now bbbbbbbbbbbbbbbb)" in said[0]
