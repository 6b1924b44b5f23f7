"""What a `SampleTracker` holds, declared once for the type checker. The tracker's methods are split
over `core`, `evaluation` (`TrackerEvaluation`), `checkpoints` (`TrackerCheckpoints`) and `results`
(`TrackerResults`), and the mixins read the attributes that `SampleTracker.__init__` makes and call
its helpers: declared here, they are checked in every part. Nothing here exists at run time beyond
the annotations."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import torch

    from harness.recorders import Records
    from harness.tracker.batch_log import Batch, BatchLog
    from harness.tracker.class_probs import ClassProbSums
    from harness.tracker.inputs import Inputs
    from harness.tracker.selection import ProxySelection
    from harness.tracker.signals import TrackedSignals


class TrackerFields:
    """The attributes of `SampleTracker` (see its `__init__`). The device state (`_device`,
    `_inputs`, `_signals`, `_log`) is None until `_ensure_device` makes it, all at once."""

    n: int
    running_sums: bool
    epochs: int
    num_classes: int | None
    _allowed_repeats: int  # extra presentations: the user's or update(gather=True)'s; `allowed_repeats` adds a state's
    _resumed_allowance: int
    _selection: ProxySelection
    _fixed_labels: np.ndarray | None
    _fixed_top: int
    _device: torch.device | None
    _inputs: Inputs | None
    _signals: TrackedSignals | None
    _log: BatchLog | None
    _replay: Batch | None
    _pending: bool
    _finished: bool
    _all_batches_had_logits: bool
    _had_logits_closed: bool
    _closed_logits_unknown: bool  # `_had_logits_closed` guessed from a state that did not keep it
    _eval_at: list[int]
    _warned_repeats: bool
    _warned_other_loss: bool
    _host: Records | None
    _saved: dict[str, Any] | None
    _suggest: bool | None
    _class_probs: ClassProbSums | None
    _no_suggestion: str | None

    if TYPE_CHECKING:  # defined by `SampleTracker` and `TrackerCheckpoints`, called across the parts

        def _check_open(self, what: str) -> None: ...

        def _check_classes(self, classes: int, message: str) -> None: ...

        def _flush(self) -> None: ...

        def _ensure_device(self, device: torch.device, where: str) -> None: ...

        def _restore_now(self, where: str) -> None: ...

        def _allow_repeats(self, count: int) -> None: ...

        @property
        def allowed_repeats(self) -> int: ...
