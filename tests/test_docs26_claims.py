"""Figures and promises the pages quote, pinned to what the code computes: the privacy page's
non-member pair count, the tie-breaking hand case of tasks-and-metrics, the proxy count of
`--proxies all` on the proxies page, and what the API page's notebook section says a
`run_experiment` call leaves in the calling process. A change to the code that moves one of them
fails here, naming the page to update."""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
import signal
import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from baselines.privacy import lira_scores
from baselines.stability import subset_masks
from harness.tasks.privacy import all_proxy_metrics, few_negatives_warning, proxy_metrics
from harness.tasks.reference import REFERENCE_DEFAULTS
from proxies import resolve_proxies

# tasks-and-metrics.md ("the flagged set of the privacy task"): 12 samples, the top 25 % = 3 places,
# taken by 0.9 and two of the three samples at 0.8
V_TIED = np.array([0.9, 0.8, 0.8, 0.8, 0.5, 0.4, 0.3, 0.2, 0.1, 0.6, 0.55, 0.45])
S_TIED = np.array([5, 1, 3, 2, 0, 1, 2, 0, 1, 4, 3, 2.0])


def test_the_non_member_pairs_privacy_md_quotes() -> None:
    """privacy.md: 442 non-member pairs at N = 200, K = 8 (`--subset 200 --task-arg
    memorization.k=8`, seed 0), fewer than the 1,000 that FPR 0.1 % needs, so a warning."""
    members = subset_masks(200, 8, REFERENCE_DEFAULTS["fraction"], 0)
    phi = np.random.default_rng(0).normal(size=members.shape)  # which pairs are defined depends on the masks alone
    lira = lira_scores(phi, members)
    assert int((~members & np.isfinite(lira)).sum()) == 442
    with pytest.warns(UserWarning, match=r"has 442 non-member \(model, sample\) pairs.*>= 1000 pairs"):
        few_negatives_warning(lira, members)


def test_the_flag_auprc_hand_case_tasks_and_metrics_quotes() -> None:
    """The exact expected AUPRC over the three equally likely flag sets is 0.590; memprox's mean of
    1,024 seeded draws reads 0.587; the fractional flags' AUPRC, 0.567, is not the expectation."""
    exact = []
    for pick in itertools.combinations([1, 2, 3], 2):
        flag = np.zeros(12, dtype=bool)
        flag[[0, *pick]] = True
        exact.append(average_precision_score(flag, S_TIED))
    assert round(float(np.mean(exact)), 3) == 0.590
    points, _ = all_proxy_metrics(V_TIED, {"p": S_TIED}, 0.25, None)
    assert round(float(points["p"]["auprc"][0]), 3) == 0.587
    fractional = proxy_metrics(V_TIED, S_TIED, np.ones((1, 12)), 0.25)
    assert round(float(fractional["auprc"][0]), 3) == 0.567


def test_the_proxy_counts_proxies_md_quotes() -> None:
    """proxies.md: `--proxies all` scores 16 proxies; `--proxy-arg learning_time.rule=count` 15, and
    `learning_time.power=1` keeps both learning_time entries."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = [p.label for p in resolve_proxies("all", {})]
        merged = [p.label for p in resolve_proxies("all", {"learning_time": {"rule": "count"}})]
        power = [p.label for p in resolve_proxies("all", {"learning_time": {"power": 1}})]
    assert len(plain) == 16 and len(merged) == 15
    assert [label for label in merged if label.startswith("learning_time")] == ["learning_time(rule=count)"]
    assert [label for label in power if label.startswith("learning_time")] == [
        "learning_time(power=1)", "learning_time(power=1,rule=count)"]


def _open_files() -> set[str]:
    """What this process's descriptors point at (Linux): files, pipes and sockets alike."""
    found = set()
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # the listing's own descriptor, closed by now
            continue
        if not target.startswith("/proc/"):  # the listing's own descriptor, while open
            found.add(target)
    return found


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads /proc/self/fd")
def test_a_local_call_leaves_the_process_as_the_api_page_says(tmp_path: Path) -> None:
    """api/api.md, "Calling it again and again": signal handlers, warning filters, logging handlers
    and the working folder as before; no worker process and no file of the run left open."""
    from harness.api import run_experiment

    def mine(signum, frame) -> None:  # a notebook's own SIGTERM handler
        pass

    root = logging.getLogger()
    handler = logging.NullHandler()
    root.addHandler(handler)
    before_term = signal.signal(signal.SIGTERM, mine)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", DeprecationWarning)
            state = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM), list(warnings.filters),
                     list(root.handlers), os.getcwd())
            run_experiment(dataset="digits", proxies="final_loss", tasks="mislabeled", seeds=1, noise_rates=[0.1],
                           epochs=1, subset=120, device="cpu", bootstrap=0, progress=False, executor="local",
                           workers=1, store=tmp_path / "store", out=tmp_path / "out")
            files = _open_files()
            run_experiment(dataset="digits", proxies="final_loss", tasks="mislabeled", seeds=1, noise_rates=[0.1],
                           epochs=1, subset=120, device="cpu", bootstrap=0, progress=False, executor="local",
                           workers=1, store=tmp_path / "store", out=tmp_path / "again", overwrite=True)
            assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM), list(warnings.filters),
                    list(root.handlers), os.getcwd()) == state
        assert not multiprocessing.active_children()
        left = {f for f in _open_files() if str(tmp_path) in f}
        assert not left, f"files of the run left open: {sorted(left)}"
        assert _open_files() <= files, "the second call left more open than the first"
    finally:
        signal.signal(signal.SIGTERM, before_term)
        root.removeHandler(handler)
