"""What docs/extending.md tells a proxy author that a first plugin tripped on (journey23): the
`pip install --target` line must replace the old files on a rerun after an edit (without `--upgrade`
pip keeps them with only a warning, and the next run scored the old code), and `check_number`'s low
end is open, so a parameter that may be 0 needs `low_open=False` (a default of 0.0 checked in
(0, 1] registers, then refuses itself when selected). Each test reads the page and checks the code."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from harness.errors import HarnessError
from harness.recorders import RecorderRequest
from harness.registry import Registry
from proxies import Proxy, ScoreContext, registry

PAGE = Path(__file__).resolve().parents[1] / "docs" / "extending.md"
TRAIN_LOSS = RecorderRequest.of("train_loss")


def _text() -> str:
    return " ".join(PAGE.read_text(encoding="utf-8").split())


class _OpenLow(Proxy):
    """The author's first validate: `start` in (0, 1] while its default is 0.0."""

    name, description, citation = "loss_slope", "slope of the training loss", "you, 2026"
    recorders = (TRAIN_LOSS,)
    defaults = {"start": 0.0}

    def validate(self) -> None:
        self.check_number("start", 0.0, 1.0)

    def score(self, ctx: ScoreContext) -> np.ndarray:
        return np.asarray(ctx.arrays(TRAIN_LOSS)["loss"], dtype=np.float64).sum(0)


class _ClosedLow(_OpenLow):
    def validate(self) -> None:
        self.check_number("start", 0.0, 1.0, low_open=False)


def test_every_pip_install_into_a_target_folder_replaces_the_old_files() -> None:
    """A second `pip install --target DIR .` keeps DIR's files (pip: 'Target directory ... already
    exists. Specify --upgrade to force replacement.'), so the edited plugin never ran."""
    shell = "\n".join(re.findall(r"^```bash\n(.*?)^```", PAGE.read_text(encoding="utf-8"), re.M | re.S))
    lines = [line for line in shell.splitlines() if re.search(r"\bpip install\b.*--target\b", line)]
    assert lines, "docs/extending.md no longer shows a pip install --target command"
    assert all("--upgrade" in line for line in lines), lines
    assert "without `--upgrade`, a second `pip install --target` into the same folder keeps the old files" in _text()


def test_the_open_low_end_and_its_keyword_are_as_the_page_says() -> None:
    text = _text()
    assert "`check_number(key, 0.0, 1.0, low_open=False)` for [0, 1]" in text
    assert "`high_open=True` opens the high end" in text
    with pytest.raises(HarnessError) as raised:
        _OpenLow()
    quoted = re.search(r"proxy is selected: `([^`]*)`", text)
    assert quoted and str(raised.value) == quoted.group(1)
    assert _ClosedLow().params == {"start": 0.0}
    assert _ClosedLow(start=1.0).params == {"start": 1.0}
    with pytest.raises(HarnessError, match=r"in \[0, 1\] \(got -0.1\)"):
        _ClosedLow(start=-0.1)


def test_registering_does_not_run_validate(monkeypatch) -> None:
    """The page says a default that fails validate is refused when selected, not when registered."""
    assert "Registering does not run `validate`" in _text()
    monkeypatch.setattr(registry, "PROXIES", Registry("proxy"))
    registry.register_proxy(_OpenLow)
    assert registry.PROXIES.get("loss_slope") is _OpenLow
