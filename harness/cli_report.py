"""What `python -m harness` prints: a run's report, `list`'s tables, and warnings as one line each.

Every line goes through `say`, which decides what a failed write means: a report on stdout that
cannot be written is a StorageError (exit 1), a reader that went away only ends the report, and
stderr's diagnostics are dropped rather than ending a run (`harness.cli` maps errors to exit codes).
"""

from __future__ import annotations

import sys
from dataclasses import replace
from typing import TYPE_CHECKING

from harness.config import ExperimentConfig
from harness.console import write_line
from harness.errors import StorageError
from harness.presets import PRESETS

if TYPE_CHECKING:
    import pandas as pd

    from harness.experiment import Experiment, ExperimentResult


def say(text: str, err: bool = False) -> None:
    """Print a line of the report. A reader that went away (`run ... | head`) ends the report, not the
    command: the outputs are written by then, and the exit code must still say how the experiment
    went (a BrokenPipeError made it 1, with a traceback, and hid the failures). So does a terminal
    that went away (EIO after a closed ssh session's SIGHUP: exit 1 instead of 129). A stdout that
    refuses the report (a full disk) is a StorageError, exit 1: the leaderboard is not lost with exit 0;
    stderr's lines (progress, warnings) are dropped then, not worth ending a run for."""
    try:
        write_line(text, sys.stderr if err else sys.stdout)
    except StorageError:
        if not err:
            raise


class WarningLines:
    """The CLI's warnings as `warning: ...` lines, each text once: the same warning raised by planning
    and again by loading (an image folder's) printed twice, each time as Python's
    `path:line: UserWarning: ...` with a line of memprox's source under it."""

    def __init__(self) -> None:
        self.said: set[str] = set()

    def __call__(self, message, category, filename, lineno, file=None, line=None) -> None:
        text = str(message)
        if text not in self.said:
            self.said.add(text)
            say(f"warning: {text}", err=True)


def preset_note(cfg: ExperimentConfig, input_shape: tuple[int, ...] | None = None) -> str:
    """The recipe as trained. With the dataset's `input_shape`, augmentation the engine does not apply
    (images under 16 pixels wide, token ids: `harness.training.augmenting`) is not called "on"."""
    from harness.training import augmenting

    r = cfg.recipe
    augment = "on" if r.augment else "off"
    if r.augment and r.augment_epochs is not None and r.augment_epochs < r.epochs:
        augment = f"in the first {r.augment_epochs} epochs, then off"
    if r.augment and input_shape is not None and not augmenting(replace(r, augment_epochs=None), input_shape, 0):
        augment = "on, not applied to these inputs (images under 16 pixels wide, or token ids)"  # in no epoch
    schedule = r.schedule
    if r.schedule == "multistep":
        steps = ", ".join(map(str, r.milestones))
        schedule = f"multistep (/{1 / r.gamma:g} at epochs {steps})" if steps else "multistep (no milestone: constant)"
    formats = "".join(f", {word}" for word, on in ((r.precision, r.precision != "fp32"),
                                                    ("channels-last", r.channels_last)) if on)
    return (f"preset {cfg.preset}: {cfg.model}, {plural(r.epochs, 'epoch')} {r.optimizer} lr {r.lr:g} {schedule}, "
            f"batch {r.batch_size}, augmentation {augment}{formats}")


def cmd_list() -> None:
    from tabulate import tabulate

    from harness.datasets import dataset_names
    from harness.models import MODELS
    from harness.tasks import TASKS
    from proxies import available_proxies

    say("Proxies (parameters: --proxy-arg NAME.PARAM=VALUE, or NAME(PARAM=VALUE) in --proxies):")
    say(tabulate([(n, c.description, _defaults(c.defaults), c.citation) for n, c in available_proxies().items()],
                 headers=["name", "description", "parameters", "citation"]))
    say(f"\nDatasets: {', '.join(dataset_names())}")
    say("\nModels:")
    say(tabulate([(m.name, m.description) for m in MODELS.values()], headers=["name", "description"]))
    say("\nTasks (parameters: --task-arg NAME.PARAM=VALUE):")
    say(tabulate([(n, t.description, _defaults(t.defaults)) for n, t in TASKS.items()],
                 headers=["name", "description", "parameters"]))
    say("\nPresets:")
    say(tabulate([(n, p.description) for n, p in PRESETS.items()], headers=["name", "description"]))


def _defaults(defaults: dict) -> str:
    """A class's parameters with their defaults, as --proxy-arg and --task-arg take them."""
    return ", ".join(f"{k}={v}" for k, v in defaults.items()) or "-"


def plural(n: int, one: str, many: str = "") -> str:
    """`1 seed`, `2 seeds`: a first run of one seed read `1 settings × 1 seeds · 1 distinct runs`."""
    return f"{n} {one if n == 1 else many or one + 's'}"


def written_to(cfg: ExperimentConfig) -> str:
    return f" to {cfg.out}" if cfg.out is not None else ""


def held_out_line(subset: int | None, tested: int, accs: list[float]) -> str | None:
    """The base runs' held-out accuracy, saying on how many test samples: a subset run is scored on
    max(1,000, subset) of them (`harness.datasets.base._test_count`; the quick preset's 4,000 of
    CIFAR-10's 10,000), which "on the test split" hid. None without a test split (NaN) or a value (a
    manifest holding null, which `Manifest.from_dict` lets through, made the sum a TypeError)."""
    held = [a for a in accs if isinstance(a, (int, float)) and a == a]
    if not held:
        return None
    where = (f"{tested:,} samples of the test split (a run on a subset is scored on max(1,000, subset) of them)"
             if subset is not None else f"the test split ({tested:,} samples)")
    return f"held-out accuracy of the base runs on {where}: mean {sum(held) / len(held):.3f}, min {min(held):.3f}"


def report_run(cfg: ExperimentConfig, exp: Experiment, result: ExperimentResult) -> None:
    """The lines printed once the outputs are written: the runs, the training checks, the leaderboard,
    where the files are, the phases and the failures."""
    from harness.experiment import format_phases
    from harness.leaderboard import markdown
    from harness.machine import mixed_machines_line

    resumed = f" ({len(result.resumed)} resumed from their checkpoints)" if result.resumed else ""
    say(f"runs: {len(result.trained)} trained{resumed}, {len(result.reused)} reused from the store", err=True)
    if mixed := mixed_machines_line(result.machines):
        say(mixed, err=True)
    if result.base_train_acc:
        accs, shape = result.base_train_acc, tuple(exp.dataset.x_train.shape[1:])
        say(f"final training accuracy of the base runs on the labels they trained on: "
            f"mean {sum(accs) / len(accs):.3f}, min {min(accs):.3f} ({preset_note(cfg, shape)})", err=True)
    if held := held_out_line(exp.cfg.subset, len(exp.dataset.y_test), result.base_test_acc):
        say(held, err=True)
    if result.reference_train_acc:
        accs = result.reference_train_acc
        say(f"final training accuracy of the {len(accs)} stability reference models on their subsets: "
            f"mean {sum(accs) / len(accs):.3f}, min {min(accs):.3f} (memorization compares models that fit their "
            "samples: far below 1, train the reference longer)", err=True)
    if result.flipped_fit:
        fits = list(result.flipped_fit.values())
        say(f"share of the flipped labels the noisy base runs fit: mean {sum(fits) / len(fits):.3f}, min "
            f"{min(fits):.3f} (near 1: the memorization regime of the paper's tables; near 0: the last "
            "epoch's loss alone finds them)", err=True)
    say(markdown(result.leaderboard))
    if cfg.out is not None:
        say(f"leaderboard: {cfg.out / 'leaderboard.csv'}  (per-seed rows: raw.csv, per-sample scores: scores/)")
        if "suspects" in result.outputs:
            drawn = any(f.startswith("figures/suspects_") for f in result.outputs.get("figures", []))
            say(f"suspects: {cfg.out / 'suspects'}/  (every sample, most suspicious first"
                f"{'; the top k in figures/' if drawn else ''})")
            if "suspects/duplicates.csv" in result.outputs["suspects"]:
                exact = any(t.name == "suspects" and t.params.get("duplicates") == "exact" for t in exp.tasks)
                copies = ("texts of equal token ids (after max_length)" if exp.dataset.is_tokens  # exact only
                          else "exact copies" if exact else "copies and near copies")
                say(f"duplicates: {cfg.out / 'suspects' / 'duplicates.csv'}  ({copies} among the training samples: "
                    f"{_pairs_found(result.tables['suspects/duplicates.csv'])})")
                if "suspects/train_test_duplicates.csv" in result.outputs["suspects"]:
                    tests = result.tables["suspects/train_test_duplicates.csv"].drop_duplicates("test")
                    say(f"test copies: {cfg.out / 'suspects' / 'train_test_duplicates.csv'}  ({len(tests)} of the "
                        f"{len(exp.dataset.x_test)} test samples copy a training sample, "
                        f"{int(tests['labels_differ'].sum())} under another label)")
    say(format_phases(result.phase_seconds), err=True)
    if result.failures:
        say(f"{len(result.failures)} failure(s):", err=True)
        for f in result.failures:
            say(f"  - {f}", err=True)


def _pairs_found(pairs: pd.DataFrame) -> str:
    """The pairs found, and how many differ in label: the line read the same for an empty file."""
    if not len(pairs):
        return "none found"
    differ = int(pairs["labels_differ"].sum())
    first = ", listed first" if differ else ""
    return f"{len(pairs)} pair{'s' * (len(pairs) != 1)}, {differ} with different labels{first}"
