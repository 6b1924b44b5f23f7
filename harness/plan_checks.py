"""The planner's pre-training checks: what would fail only once a run trains (classes too thin to
split, a last batch of one sample that batch norm cannot take, input gradients asked of token ids)
is refused while the experiment is planned, with the fix, so bad input costs nothing."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import torch

from harness.config import ExperimentConfig
from harness.datasets import Dataset
from harness.errors import HarnessError
from harness.model_registry import build_model
from harness.prepared import PreparedData
from harness.recorders import RecorderRequest
from harness.runspec import DataSpec, RunSpec
from harness.store import StoredRun
from harness.tasks import Setting, Task
from harness.upgrade_notice import paste_proxies
from proxies import Proxy

#: How the other-settings warnings (`warn_other_devices`, `harness.planner.warn_other_threads`, ...) name the
#: runs they count: those stored when the experiment was planned, those another process stored while this
#: one waited for their locks, and those it resumed from a checkpoint (`Planner.warn_read_back`).
READ = "read from the store"
READ_BACK = "that another process stored while this experiment waited for them"
RESUMED = "this experiment resumed from a checkpoint"
#: Recorders that differentiate the loss with respect to the inputs: token ids (int64) have no
#: gradient, so a text dataset cannot take them.
INPUT_GRADIENT_RECORDERS = ("input_grads", "curvature")
#: The built-in proxies that read them (named in the error, with the selected ones).
INPUT_GRADIENT_PROXIES = ("loss_sensitivity", "csg", "learning_time", "curvature")


class PlanChecks:
    """The checks of one experiment's plan, on its dataset; `prepared` gives a run's data on the
    experiment's device (the planner's, cached there)."""

    def __init__(self, cfg: ExperimentConfig, dataset: Dataset, prepared: Callable[[DataSpec], PreparedData]) -> None:
        self.cfg, self.dataset, self.prepared = cfg, dataset, prepared
        self._single_sample_ok: dict[tuple, bool] = {}  # (model, input shape, classes) -> trains on a batch of 1

    def last_batch(self, spec: RunSpec, m: int) -> None:
        """A phase of m samples whose last batch holds one sample: batch norm cannot train on one value
        per channel, which a small image reaches in a CNN's last layers (8x8 digits in small_cnn). That
        failed with a traceback at the end of the first epoch; it is refused here, with the fix. Models
        that can take it (no batch norm, or larger maps) train as before: one forward of a single sample
        in train mode tells."""
        size = spec.recipe.batch_size
        if m % size != 1 or m == 1:
            return
        data = self.prepared(spec.data)
        key = (spec.model, tuple(data.x.shape[1:]), data.num_classes)
        if key not in self._single_sample_ok:
            model = build_model(spec.model, key[1], key[2]).to(data.x.device).train()
            try:
                with torch.no_grad():
                    model(data.inputs(torch.zeros(1, dtype=torch.long, device=data.x.device)))
                self._single_sample_ok[key] = True
            except ValueError as e:
                if "Expected more than 1 value per channel" not in str(e):
                    raise
                self._single_sample_ok[key] = False
        if not self._single_sample_ok[key]:
            fits = next(b for b in range(size - 1, 0, -1) if m % b != 1)
            raise HarnessError(f"run {spec.label()} trains {m} samples at batch size {size}, so its last batch holds "
                               f"one sample, and the batch norm of {spec.model} cannot train on one sample at "
                               f"{'x'.join(map(str, key[1][1:]))} inputs; pass --batch-size {fits} (any size b "
                               f"with {m} % b != 1), or another --subset")

    def classes(self) -> None:
        """Every class needs two training samples: stratified folds and halves, and a label to flip
        to, are undefined below that, and a leaderboard of one-sample classes says nothing."""
        counts = np.bincount(self.dataset.y_train.numpy(), minlength=self.dataset.num_classes)
        thin = [_class_label(int(c), self.dataset.classes) for c in np.flatnonzero(counts < 2)]
        if thin:
            where, fix = f"--subset {self.cfg.subset}", "use a larger --subset (or drop those classes from the data)"
            if not self.cfg.subset:  # the whole dataset: no --subset can add samples
                where, fix = f"dataset {self.cfg.dataset}", "add training samples to those classes or drop them"
            raise HarnessError(f"{where} leaves class(es) {', '.join(thin)} with fewer than 2 training samples; {fix}")

    def input_gradients(self, runs: dict[RunSpec, set[RecorderRequest]], proxies: list[Proxy],
                        settings: list[tuple[Task, Setting, RunSpec]]) -> None:
        """Token ids (a text dataset) have no input gradient: refuse the recorders that need one."""
        if not self.dataset.is_tokens:
            return
        asked = {r.name for requests in runs.values() for r in requests} & set(INPUT_GRADIENT_RECORDERS)
        if not asked:
            return
        bases = {base for _, _, base in settings}
        selected = sorted({p.label for p in proxies for base in bases for n in p.needs(base)
                           if {r.name for r in n.recorders} & asked})
        raise HarnessError(f"dataset {self.cfg.dataset} holds text (token ids), which have no input gradients; "
                           f"the proxies {', '.join(selected) or '(of the tasks)'} need them (the input-gradient "
                           f"proxies are {', '.join(INPUT_GRADIENT_PROXIES)}); drop them from --proxies for text"
                           + ("" if self.cfg.proxy_args else _the_rest(proxies, selected)))


def warn_other_devices(done: dict[RunSpec, StoredRun], device: torch.device, what: str = READ) -> None:
    """One line when runs read from the store were trained on another kind of device than this
    experiment trains on. A run's address leaves the device out (a CPU and a GPU run of one spec are
    one entry), yet the two agree only to rounding: a CPU experiment that read GPU runs, or mixed them
    with its own, reported numbers a fresh run here does not give, and nothing said so; its --out is
    marked as this device's experiment (`harness.config_identity`)."""
    kinds = {spec: run.manifest.device.partition(":")[0] for spec, run in done.items()}
    other = sorted(set(kinds.values()) - {device.type})
    if other:
        count = sum(kind != device.type for kind in kinds.values())
        first = next(spec for spec, kind in kinds.items() if kind != device.type)
        warnings.warn(f"{count} run(s) {what} ({first.label()}{', ...' if count > 1 else ''}) were "
                      f"trained on {'/'.join(other)}, this experiment trains on {device.type}: runs on another kind "
                      "of device agree with its own to rounding, not bitwise, so these are not the numbers a fresh "
                      f"run here gives; pass --device {other[0]} to match them, or another --store to retrain them",
                      stacklevel=3)


def _the_rest(proxies: list[Proxy], dropped: list[str]) -> str:
    """The selection without `dropped`, to paste: `--proxies all` on text is refused, so the user types it.
    Not offered with --proxy-arg (the caller's test): a pasted label holds its parameters, which the
    --proxy-arg given again would repeat, refused (as the planner's retraining notice does)."""
    return paste_proxies([p.label for p in proxies if p.label not in dropped])


def _class_label(c: int, names: tuple[str, ...]) -> str:
    """A class id with its name where the name says more than the id: "3 ('rose')", or "3"."""
    return str(c) if names[c] == str(c) else f"{c} ({names[c]!r})"
