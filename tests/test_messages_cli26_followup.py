"""Two messages cli26 found misleading: torchvision's download error without a network read as
damaged files over seven lines, and --task-arg's format example was a proxy's parameter."""

from __future__ import annotations

import pytest
import torchvision.datasets as tvd

from harness.datasets.torchvision_sets import _load_torchvision
from harness.errors import HarnessError
from harness.values import parse_key_values


def test_a_download_without_network_is_one_line_naming_the_network(tmp_path, monkeypatch) -> None:
    def offline(**_kwargs):
        raise RuntimeError("Error downloading cifar-10-python.tar.gz:\nTried https://www.cs.toronto.edu/..., got:\n"
                           "<urlopen error [Errno -3] Temporary failure in name resolution>\n")

    monkeypatch.setattr(tvd, "CIFAR10", offline)
    with pytest.raises(HarnessError) as caught:
        _load_torchvision("cifar10", tmp_path, download=True, subset=None)
    message = str(caught.value)
    assert "download into" in message and "check the network" in message and "unusable" not in message
    assert "\n" not in message


def test_a_damaged_download_still_says_unusable(tmp_path, monkeypatch) -> None:
    def damaged(**_kwargs):
        raise RuntimeError("Dataset not found or corrupted. You can use download=True to download it")

    monkeypatch.setattr(tvd, "CIFAR10", damaged)
    with pytest.raises(HarnessError, match="unusable after download"):
        _load_torchvision("cifar10", tmp_path, download=True, subset=None)


@pytest.mark.parametrize(("flag", "example"), [("--task-arg", "suspects.k=40"), ("--proxy-arg", "curvature.n=2")])
def test_each_flag_gives_an_example_of_its_own(flag: str, example: str) -> None:
    with pytest.raises(HarnessError, match=rf"{flag} takes NAME\.PARAM=VALUE \(e\.g\. {example}\)"):
        parse_key_values(["oops"], flag)
