"""What an experiment's `summary.json` holds, apart from how the output folder is written
(`harness.outputs`): the experiment, its config, every run it used, what failed, and its outputs."""

from __future__ import annotations

from pathlib import Path

import torch

from harness.config import ExperimentConfig
from harness.evaluation import ExperimentResult
from harness.provenance import memprox_version
from harness.runspec import RunSpec
from harness.store import StoredRun

#: The tables every experiment writes (ExperimentResult.outputs lists them too, once written).
TABLES = {"leaderboard": ["leaderboard.csv"], "raw": ["raw.csv"], "markdown": ["leaderboard.md"]}


def summary(result: ExperimentResult, runs: dict[RunSpec, StoredRun], cfg: ExperimentConfig, identity: str,
            device: torch.device, phase_seconds: dict[str, float]) -> dict:
    """summary.json: the experiment, its config, every run it used, what failed, and its outputs."""
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(cfg).items() if k != "recipe"}
    return {
        "experiment": identity,
        "memprox": memprox_version(),
        "config": config | {"recipe": vars(cfg.recipe)},
        "device": str(device),
        "runs": [{"label": r.manifest.label, "hash": r.manifest.spec_hash, "engine": r.manifest.engine,
                  "threads": r.manifest.threads, "compiled": r.manifest.compiled, "machine": r.manifest.machine,
                  "train_acc": r.manifest.train_acc, "test_acc": r.manifest.test_acc,
                  "train_seconds": r.manifest.train_seconds,
                  **({"flipped_fit": result.flipped_fit[r.manifest.spec_hash]}
                     if r.manifest.spec_hash in result.flipped_fit else {})}
                 for r in sorted(runs.values(), key=lambda r: (r.manifest.label, r.manifest.spec_hash))],
        "proxies": result.proxies,  # label, params, class; from outside memprox also package and code digest
        "trained": sorted(result.trained),  # sorted: the order jobs finished differed by executor and rerun
        "reused": sorted(result.reused),
        "resumed": dict(sorted(result.resumed.items())),  # of the trained runs: label -> epoch resumed at
        "failures": result.failures,
        "outputs": {**{kind: files[0] for kind, files in TABLES.items()}, **result.outputs},
        "phase_seconds": phase_seconds,  # write: up to this summary (it and the publish take ms)
    }
