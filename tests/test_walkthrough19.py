"""A new user's mistakes, from the walkthrough of the rewritten docs (session 19): each is refused
before training with one line that names the problem *and* the fix, as docs/experiments.md#bad-input
promises. These three named the problem only."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.cli import main
from harness.errors import HarnessError
from proxies import resolve_proxies


def _refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], *flags: str) -> str:
    """The one error line of a refused `run` (exit 2), with nothing written to --out or the store."""
    out, store = tmp_path / "out", tmp_path / "store"
    code = main(["run", "--no-progress", "--out", str(out), "--store", str(store), *flags])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1, lines
    assert not out.exists() and not store.exists()
    return lines[0]


def test_a_flag_given_twice_names_both_values_and_says_pass_it_once(tmp_path, capsys) -> None:
    line = _refused(tmp_path, capsys, "--seeds", "1", "--seeds", "2")
    assert line.startswith("error: --seeds given more than once (1, then 2); pass it once;"), line


def test_a_switch_given_twice_says_pass_it_once(tmp_path, capsys) -> None:
    line = _refused(tmp_path, capsys, "--overwrite", "--overwrite")
    assert line.startswith("error: --overwrite given more than once; pass it once;"), line


def test_proxy_arg_for_a_known_unselected_proxy_says_add_it_or_drop_it(tmp_path, capsys) -> None:
    line = _refused(tmp_path, capsys, "--proxies", "csl,aum", "--proxy-arg", "curvature.n=2")
    assert line == ("error: --proxy-arg names proxy 'curvature', which is not among the selected proxies "
                    "(csl, aum); add it to --proxies or drop the argument")


def test_proxy_arg_for_no_proxy_at_all_says_fix_the_name_not_add_it() -> None:
    """With `--proxies all` every proxy is selected: "not among the selected proxies" alone read as a
    contradiction, and "add it to --proxies" would be no fix for a name that no proxy has."""
    with pytest.raises(HarnessError) as refused:
        resolve_proxies("all", {"curvatur": {"n": 2}})
    message = str(refused.value)
    assert "(did you mean 'curvature'?): no proxy has that name; fix it or drop the argument" in message
    assert "add it to --proxies" not in message


def test_a_proxy_selected_twice_says_list_each_once() -> None:
    with pytest.raises(HarnessError, match=r"^proxy variant\(s\) selected twice: csl; list each once$"):
        resolve_proxies("csl,aum,csl")


def test_the_api_words_the_proxy_arg_fix_in_keywords(tmp_path) -> None:
    from harness import run_experiment

    with pytest.raises(HarnessError, match=r"\(csl\); add it to proxies or drop the argument$"):
        run_experiment(proxies="csl", proxy_args=["curvature.n=2"], store=tmp_path / "store")
    assert not (tmp_path / "store").exists()
