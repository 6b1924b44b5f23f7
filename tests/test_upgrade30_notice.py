"""The notice a user upgrading memprox meets: their recorder's code is as it was, memprox's digest reads more.

A recorder of theirs that reads a module list filled by a loop (read since 5 December 2026) got a new key, so
their stored runs train again; the line said the runs were stored before the recorder existed, by an experiment
that did not ask for it, or before its code was edited -- none of which the user did (seen upgrading da3a1ae).
"""

from __future__ import annotations

import pytest

from harness.upgrade_notice import upgrade_notice

PLUGIN_KEY = "logit_grad_norm30@code-0026fce49c4f"


def test_a_code_keyed_recorder_names_an_upgrade_of_memprox_as_a_reason(base_spec) -> None:
    line = upgrade_notice({base_spec: {PLUGIN_KEY}}, {base_spec: {PLUGIN_KEY: {("proxy", "grad_norm30")}}}, [])
    assert line is not None
    reasons = line.split(": ", 1)[1].split(", they train again")[0]
    assert reasons == ("stored before the recorder existed, or by an experiment that did not ask for it, or before "
                       "its code was edited (its key carries a digest of its code), or by a memprox whose code digest "
                       "read less of it (after an upgrade of memprox, a recorder of yours may record again once with "
                       "no edit of yours: docs/extending.md says what the digest began to read, and when)")
    assert line.endswith("; to avoid it, drop grad_norm30 from --proxies")


@pytest.mark.parametrize("key", ["train_loss", "eval_pass[epochs=all]"])
def test_a_recorder_of_memprox_names_neither_an_edit_nor_an_upgrade(base_spec, key: str) -> None:
    line = upgrade_notice({base_spec: {key}}, {base_spec: {}}, [])
    assert line is not None and "memprox" not in line and "edited" not in line
    assert f"lack recorder(s) {key}: stored before the recorder existed, or by an experiment that did not ask " \
           "for it, they train again in full" in line
