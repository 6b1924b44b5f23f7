"""What each proxy costs: measured FLOPs and seconds of everything it needs.

Every proxy needs one trained model, so each is charged the base run's training; on top come the
recorders it asked for on that run and the whole of any extra run (SSFT's, the folds'). Ratios are
relative to the base run's plain training (recorders excluded), the paper's Table 5 convention.
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


def proxy_cost(proxy: Proxy, base: RunSpec, runs: Mapping[RunSpec, StoredRun]) -> dict[str, float]:
    plain_flops, plain_seconds = run_cost(runs[base], set(), include_training=True)
    flops, seconds = plain_flops, plain_seconds
    for need in proxy.needs(base):
        f, s = run_cost(runs[need.spec], {r.key for r in need.recorders}, include_training=need.spec != base)
        flops, seconds = flops + f, seconds + s
    return cost_row(flops, seconds, runs[base])


def cost_row(flops: float, seconds: float, base: StoredRun) -> dict[str, float]:
    """Absolute cost and its ratio to `base`'s plain training (recorders excluded)."""
    plain_flops, plain_seconds = run_cost(base, set(), include_training=True)
    return {
        "flops": flops,
        "seconds": seconds,
        "flops_rel": flops / plain_flops if plain_flops else float("nan"),
        "seconds_rel": seconds / plain_seconds if plain_seconds else float("nan"),
    }
