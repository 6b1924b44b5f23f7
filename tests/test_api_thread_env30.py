"""`run_experiment` names a bad OMP_NUM_THREADS as the command line does, keeps it from the processes it starts,
and puts it back for the notebook afterwards."""

from __future__ import annotations

import os

from harness.api import run_experiment


def test_a_bad_thread_variable_is_named_and_put_back(monkeypatch, tmp_path, capsys) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "garbage")
    seen: list[str | None] = []
    import harness.experiment

    real = harness.experiment.Experiment.run

    def run(self):
        seen.append(os.environ.get("OMP_NUM_THREADS"))
        return real(self)

    monkeypatch.setattr(harness.experiment.Experiment, "run", run)
    run_experiment(proxies="csl", tasks="mislabeled", seeds=1, epochs=1, subset=120, out=None,
                   store=tmp_path / "store", executor="inprocess", bootstrap=0)
    assert seen == [None]  # not there while the runs train
    assert capsys.readouterr().err.count("OMP_NUM_THREADS='garbage'") == 1
    assert os.environ["OMP_NUM_THREADS"] == "garbage"  # the notebook's, as it was
