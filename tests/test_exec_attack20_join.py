"""`--executor ray` against a token cluster with a wrong token (issue 20): Ray says "Authentication
token is missing or incorrect" in its retry lines, then memprox's line asked to "set RAY_AUTH_MODE=token
and its token", which the user had done. The line now says the token must be the cluster's own."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from harness.errors import HarnessError

ray_executor = pytest.importorskip("harness.executors.ray")


def test_a_refused_join_says_the_token_must_be_the_clusters_own(monkeypatch) -> None:
    def init(**kwargs):  # what Ray raises after its retries with a wrong token
        raise ConnectionError("Failed to connect to Ray cluster at 192.0.2.2:46391")

    monkeypatch.setattr(ray_executor, "ray", SimpleNamespace(init=init))
    with pytest.raises(HarnessError) as refused:
        ray_executor._join("127.0.0.1:46391", "127.0.0.1:46391")
    text = str(refused.value)
    assert text.startswith("could not join the Ray cluster at 127.0.0.1:46391 (Failed to connect to Ray cluster at ")
    assert "set RAY_AUTH_MODE=token and the cluster's own token (RAY_AUTH_TOKEN, or the file ~/.ray/auth_token: " \
           "a copy of the head's)" in text
