"""The start line says where the cost task measures (alone it trains clean base runs of its own, which a
store holding only another task's runs lacks: a run trained where the user expected none), and the
preset line counts one epoch in the singular."""

from __future__ import annotations

from harness.cli import main


def _start(tmp_path, capsys, *tasks: str) -> str:
    noise = ["--noise-rates", "0.1"] if "mislabeled" in tasks else []
    code = main(["run", "--proxies", "csl", "--tasks", ",".join(tasks), *noise, "--seeds", "1", "--epochs", "1",
                 "--subset", "200", "--executor", "inprocess", "--no-progress",
                 "--out", str(tmp_path / "-".join(tasks)), "--store", str(tmp_path / "store")])
    assert code == 0
    return capsys.readouterr().err


def test_the_start_line_names_the_runs_cost_measures_on(tmp_path, capsys) -> None:
    alone = _start(tmp_path, capsys, "cost")
    assert alone.splitlines()[0].endswith(" · preset quick · cost on the clean runs")
    assert "mlp, 1 epoch sgd lr" in alone
    beside = _start(tmp_path, capsys, "mislabeled", "cost")
    assert beside.splitlines()[0].endswith(" · cost on the noise=0.1 runs")
    assert "cost on" not in _start(tmp_path, capsys, "mislabeled").splitlines()[0]
