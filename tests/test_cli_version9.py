"""`memprox --version`: the first line of a bug report."""

from __future__ import annotations

import platform
from importlib.metadata import version

import pytest

from harness.cli import main


def test_version_names_memprox_torch_and_python(capsys) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    expected = f"memprox {version('memprox')} (torch {version('torch')}, Python {platform.python_version()})"
    assert capsys.readouterr().out.strip() == expected

