"""A torchvision dataset file that cannot be read (permissions, a disk error: an OSError) was said to be
a download failure, "check the network", even without --download; a network error still says so."""

from __future__ import annotations

import errno
from urllib.error import URLError

import pytest
import torchvision.datasets as tvd

from harness.datasets.torchvision_sets import _load_torchvision
from harness.errors import HarnessError


@pytest.mark.parametrize("download", [False, True])
def test_a_file_that_cannot_be_read_is_no_network_failure(tmp_path, monkeypatch, download: bool) -> None:
    def unreadable(**_kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "cifar-10-batches-py" / "data_batch_1"))

    monkeypatch.setattr(tvd, "CIFAR10", unreadable)
    with pytest.raises(HarnessError) as caught:
        _load_torchvision("cifar10", tmp_path, download=download, subset=None)
    message = str(caught.value)
    assert message.startswith(f"cifar10: cannot read the dataset files under data root {tmp_path} (PermissionError: ")
    assert "network" not in message and "\n" not in message


def test_a_network_error_still_names_the_network(tmp_path, monkeypatch) -> None:
    def offline(**_kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(tvd, "CIFAR10", offline)
    with pytest.raises(HarnessError, match=r"download into .* failed .*check the network"):
        _load_torchvision("cifar10", tmp_path, download=True, subset=None)


def test_a_connection_dropped_mid_download_names_the_network(tmp_path, monkeypatch) -> None:
    """http.client's IncompleteRead is no OSError: it went out as a traceback."""
    from http.client import IncompleteRead

    def dropped(**_kwargs):
        raise IncompleteRead(b"partial", 1000)

    monkeypatch.setattr(tvd, "CIFAR10", dropped)
    with pytest.raises(HarnessError, match=r"^cifar10: download into .* failed .*check the network"):
        _load_torchvision("cifar10", tmp_path, download=True, subset=None)
