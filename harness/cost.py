"""What each proxy costs: measured FLOPs and seconds of everything it needs.

A proxy is charged exactly the runs it declares in `needs` (methods.md, "cost": its runs and its
extra passes): each such run's training once, plus the recorders the proxy asked for on it. A
proxy that reads the base run (csl, final_loss, ...) is thus charged the base run's training; one
that trains its own models (ssft's two two-phase runs, confident_learning's folds) is charged those
and not the base run, which its score never reads -- as the stability reference is charged its K
models only. A recorder that several proxies read (the input gradients of loss_sensitivity,
learning_time and csg) is charged in full to each: a row is what that proxy would cost alone. Costs
are read from the runs' manifests, so a run reused from the store is charged what it cost when it
trained. Ratios are relative to the base run's plain training (recorders excluded), the paper's
Table 5 convention.
"""

from __future__ import annotations

from collections.abc import Mapping

from harness.runspec import RunSpec
from harness.store import StoredRun
from proxies.base import Proxy


def run_cost(run: StoredRun, recorder_keys: set[str], include_training: bool) -> tuple[float, float]:
    m = run.manifest
    flops = float(m.train_flops) if include_training else 0.0
    seconds = float(m.train_seconds) if include_training else 0.0
    for key in recorder_keys:
        flops += float(m.recorders[key].flops)
        seconds += float(m.recorders[key].seconds)
    return flops, seconds


def needed_recorders(proxy: Proxy, base: RunSpec) -> dict[RunSpec, set[str]]:
    """The runs `proxy` reads, each once, with the union of the recorder keys it asks for there
    (a run named by two needs is trained once, so it is charged once)."""
    wanted: dict[RunSpec, set[str]] = {}
    for need in proxy.needs(base):
        wanted.setdefault(need.spec, set()).update(r.key for r in need.recorders)
    return wanted


def proxy_cost(proxy: Proxy, base: RunSpec, runs: Mapping[RunSpec, StoredRun]) -> dict[str, float]:
    """FLOPs and seconds of every run `proxy` reads on `base` (training + its recorders there) and of
    its `score`, with their ratios to the plain base run."""
    flops = seconds = 0.0
    for spec, keys in needed_recorders(proxy, base).items():
        f, s = run_cost(runs[spec], keys, include_training=True)
        flops, seconds = flops + f, seconds + s
    seconds += getattr(proxy, "score_seconds", {}).get(base, 0.0)  # what `score` computes after training
    return cost_row(flops, seconds, runs[base])


def cost_row(flops: float, seconds: float, base: StoredRun | None) -> dict[str, float]:
    """Absolute cost and its ratio to `base`'s plain training (recorders excluded); the ratios are
    NaN without a base run (no selected proxy or task trained one, e.g. --proxies ssft alone)."""
    plain_flops, plain_seconds = run_cost(base, set(), include_training=True) if base is not None else (0.0, 0.0)
    return {
        "flops": flops,
        "seconds": seconds,
        "flops_rel": flops / plain_flops if plain_flops else float("nan"),
        "seconds_rel": seconds / plain_seconds if plain_seconds else float("nan"),
    }
