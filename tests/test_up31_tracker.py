"""up31: a SampleTracker state saved by this morning's memprox (9b2283e) and loaded by today's.

The states below were written at 9b2283e by the loop of `_events` (12 samples, 3 batches an epoch, 3 epochs;
state_dict() saved mid-epoch after the last batch of epoch 1, at the end of epoch 1, and mid-epoch 2), as
literals: tensors by dtype, shape and raw bytes (`_tensor`), zlib + base64. Today's tracker loads each,
finishes the loop, and must score exactly as a tracker never saved. With plain cross-entropy it warns as that
tracker does (not at all); with label-smoothed losses= the state lacks the open epoch's other-loss count and
whether it was said (docs/own-training-loop.md, "Saving and resuming"), so the other-loss warning may come an
epoch late or again in the resumed process, never more than once there."""

from __future__ import annotations

import base64
import json
import re
import warnings
import zlib
from typing import Any

import numpy as np
import pytest
import torch

from harness import SampleTracker

N, C, B, E = 12, 3, 4, 3
Event = tuple[Any, ...]


def _events(smooth: float) -> list[Event]:
    """The loop 9b2283e saved from: per epoch a seeded order in batches of B, logits growing with the epoch,
    cross-entropy losses (label-smoothed where smooth > 0), then end_epoch()."""
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, C, (N,), generator=g)
    out: list[Event] = []
    for e in range(E):
        for idx in torch.randperm(N, generator=g).split(B):
            logits = torch.randn(len(idx), C, generator=g) * (1 + e)
            loss = torch.nn.functional.cross_entropy(logits, y[idx], reduction="none", label_smoothing=smooth)
            out.append(("update", idx, loss, logits, y[idx]))
        out.append(("end",))
    return out


def _run(tracker: SampleTracker, events: list[Event], start: int) -> tuple[Any, list[tuple[int, str]]]:
    """Events from `start` on, then scores(): the scores and each warning with the event that raised it."""
    said: list[tuple[int, str]] = []
    for k in range(start, len(events) + 1):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if k == len(events):
                scores = tracker.scores()
            elif events[k][0] == "update":
                tracker.update(events[k][1], losses=events[k][2], logits=events[k][3], labels=events[k][4])
            else:
                tracker.end_epoch()
        said += [(k, str(w.message)) for w in caught]
    return scores, said


def _tensor(v: dict) -> torch.Tensor:
    data = np.frombuffer(base64.b64decode(v["b"]), dtype=np.dtype(v["__t"])).copy()
    return torch.from_numpy(data).reshape(v["s"])


def _value(v: Any) -> Any:
    if isinstance(v, dict) and "__t" in v:
        return _tensor(v)
    if isinstance(v, dict) and "__l" in v:
        items = [_value(x) for x in v["v"]]
        return tuple(items) if v["__l"] == "tuple" else items
    if isinstance(v, dict):
        return {k: _value(x) for k, x in v.items()}
    return v


def _saved(smooth: float, k: int) -> dict:
    """The state 9b2283e's tracker held after the first k events of _events(smooth)."""
    states = json.loads(zlib.decompress(base64.b64decode("".join(STATES_9B2283E))))
    return _value(states[f"{smooth}/{k}"])


def _other_loss(said: list[tuple[int, str]]) -> list[tuple[int, int, int]]:
    """(event, presentations, epoch) of each other-loss warning."""
    found = [(k, re.search(r"losses= of (\d+) presentation\(s\) in epoch (\d+)", m)) for k, m in said]
    return [(k, int(m.group(1)), int(m.group(2))) for k, m in found if m]


@pytest.mark.parametrize("k", [3, 4], ids=["mid-epoch", "epoch-end"])
def test_a_9b2283e_state_of_a_cross_entropy_loop_resumes_with_the_same_scores_and_no_warning(k: int) -> None:
    events = _events(0.0)
    reference, said = _run(SampleTracker(N), events, 0)
    tracker = SampleTracker(N)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tracker.load_state_dict(_saved(0.0, k))
    assert [str(w.message) for w in caught] == []
    scores, resumed_said = _run(tracker, events, k)
    assert tracker.epochs == E
    assert scores.equals(reference)
    assert resumed_said == said == []


@pytest.mark.parametrize("k", [3, 4, 6], ids=["mid-epoch1", "epoch1-end", "mid-epoch2"])
def test_a_9b2283e_state_of_a_label_smoothed_loop_scores_the_same_and_warns_once_as_documented(k: int) -> None:
    events = _events(0.1)
    per_epoch = N // B + 1  # updates and the end_epoch()
    reference, said = _run(SampleTracker(N), events, 0)
    assert [(at, epoch) for at, _, epoch in _other_loss(said)] == [(per_epoch - 1, 1)]  # once, epoch 1's end
    assert len(said) == 1
    tracker = SampleTracker(N)
    tracker.load_state_dict(_saved(0.1, k))
    scores, resumed_said = _run(tracker, events, k)
    assert tracker.epochs == E
    assert scores.equals(reference)
    other = _other_loss(resumed_said)
    assert len(other) == len(resumed_said) == 1  # said once in this process, nothing else said
    at, count, epoch = other[0]
    open_epoch = k // per_epoch + 1  # the epoch the state holds open, or the next one
    assert epoch in (open_epoch, open_epoch + 1) and at == epoch * per_epoch - 1  # on time or an epoch late
    assert 0 < count <= N


#: the states 9b2283e saved (see the module docstring)
STATES_9B2283E = (
    "eNrtWW1zqjoQ/n5/Bl9xbhCpQmfOBxTfXxoVW/XMGQcwIoigAUTp9L9fQK22tbUvp/d65iadKklI9tl1k91n9p5i/mZAhrq+pyYOnisedU3N0X"
    "yBnfXfXWW+sJCMFW2GMJWiVgi7hmNT1+kUFX+yKQr7tm3Y+sj15y51PVEsF6WoeLGBor7tW1aKshQVWY89tHC0adRjoj38+UizFNeN381E65A9"
    "jjajrj3sR9soljVSFU+bInc0VcYjy9ENz93PHkaiPRwXjfcTgYJtNB5htECKdwCFVoo1itW7p0YjK9LSMlwvVoq6/vnrIUW5hm4rMcx7SlXsWf"
    "ztYcWwIyFuMrr/frE6HorNNrEcxcuw0Wj03s905leKUqPhuqM32uIA90xQ95mWKGPWghnTlGTeYa2xWMH5absmmBuJ1v22IOKu14ZCJ43NKx2E"
    "OhBFSZwEP35QD78eIpxbUJqDMdISbY4ePwpN3DVd4sXj9rx/aAURBrv5qnga2lzBumHHcA5PHwVWVqGx2ki9uZQuDAuyiGF1sWK77EbiJtmSJC"
    "pKSw1KGzBr0IZ8g8BNrdaAFreaSwJS+zp9EljklmoMZjFKPPIzuOTMxIa3VpWTOafPiEK5V29CJ+gWQ6GEgkAoASmANUm4la/czVgXynpowlVT"
    "bpkgba6e4opc0mI/ZR1TYSMP8SctWRDUoQYaeIFhNpMvhiDklzpI23dLmGX0qUR7uCaCntxeQ+GWW0k5TTG0pz/bw+EQYyfYn1LdWKEdthiIYX"
    "tZ7oX36Kc8pHpqMH/Smdqn5oun3e7E/uCx8ZEqO8yPl8Gb0MHFtC30BT4L+fR5LJ6xZlX8RHuXtW3HHk0M2/DQyI795gj86xfN19qP54KTc30Q"
    "rTqOtZfMviI53iE5/tEVak8sQ/PcV7Czvwl7LFGNgpVhj9H6JNhHQVsFk0g1sRTdfT1YIXRO73Yxf/wfb7wNiXtPO7HtxMCut4uc+5sgck0X2c"
    "mq7cD2pS2C7YiLlj6yNZQE9V3EPimDS3GpCOHDPgsYHW3+7b9BkmkkQSABd5x4HO6MeDpOZg54nt/Bqd/r05fTqBd+dSZr+Pph3jvCBy1/pwdL"
    "SHPdoXQFx7Qm3PXMKZxxt4ycTXfyLg3DGx/Oc3pF4g9RGrvpggS0RXFAC15zAAdJ1F4GzQHd6btNiG51U2J8XO4Bnp46cD0JeGnj0BVdYFXegl"
    "dxVOda4rpJD9aaBdmwxkpsFvZ5OonyDut1ZG5aUR1acO9kKONWX86FxXAAsA4liDNKQcrtsoBPW/55/vXR/qPlH5KbNDK4riPXS7L6+DBHozEf"
    "4P59PpB+gw/s9iGEgBACQggIIfgGQnBp0AkhIITgNxOCEyj+c0LApKK/z/CB9qOv5w++/v7+d/ABkpV+PSv9HB8gTOzrTOwtPpAm9YFvpANqkS"
    "u3S7J1F9LFfLgQ6+XyDPKbdl0S7pSeICqt0qBd4ZdrmS8WgoW4hsMBzDVaWZkLi8yA0AFCBwgdIPUBQgcIHSD1AVIfIPUBwsS+uT6QJvUBQggI"
    "ISCEgNQHSH2AEAJSHyD1AZKVkvrA/7g+kL0sPkDqAyfpQOqMpJ6MO/HBCypC6HZaYrISmDVP4vzapAc2wYxrV7xBtZjXedbbzifv882VVBL/CO"
    "KReqekSKnd01bJ1yU9GuGof9EU55wJeG6aXSUqgR4U8VYlxi+KPZHruRuAqpwZ1Ae5SlOypDI4MgG4yXRz4uWTqXMWaPEzAeqxRnSA1EBIVqar"
    "3YFEN9IBQ/f1qwocVjt2mLnicgx/ZIHc6q4nXBptO6evWkfi9uTz8/7Q3a5khkHDzK0tjgPlod+HbKmxkAQo5/bHKbkpdKHeJATxjySI7TOB//"
    "0EsfB+glgkBPFPrRjFbrCrGEUucTEVI54QREIQv0QQwdCfwfkUAInLbGTmhSb6bNyETKfOyewuHXja7BvswtskPSiXpm3eELQWdJu5lsl59IYD"
    "DXmmwzR30wkzyjI7oAtzOQNrcfrA+oN5G6g1j4PANldyWPexkzt3ATTdpQ3Hy2Vf2qcbX7T87mYHT9LqVy39/P03CeLDX/8Aj6VBEA=="
)
