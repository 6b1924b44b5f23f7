"""Recorders: per-sample signals written down during a run.

A recorder owns device buffers indexed by sample; the training loop hands it each batch's
(indices, logits, per-sample loss, labels) after the optimizer step, or calls it at each epoch
checkpoint. Buffers are written with index ops only: no host sync, no per-sample Python.
The loop times every recorder apart from training so each proxy is charged only what it adds.

Versions. A stored run is reused by its address and its recorder keys, so a recorder whose code
changes what it writes down would have its old arrays reused beside new ones. Each recorder class
therefore declares `version` (an int, 1 unless bumped). Bump it, in the same change, whenever the
same run would now record other values: a new definition or sign, a fixed bug, another precision,
other samples or epochs covered. Do not bump it for a change that is bit for bit the same (a
refactor, speed), or one that only adds an array (readers of old records handle its absence) --
every bump makes every stored run that carries the recorder train again. A version above 1 enters
the recorder's key (`RecorderRequest.key`: `name@v2`, `name[k=v]@v2`), and with it the stored file
names, the planner's reuse check and in-run checkpoints: an old record is then re-recorded, never
reused. Version 1 adds nothing, so every key (and store) written before versions existed is kept.

A recorder registered outside memprox (a plugin's, a user's module or notebook) also carries a digest
of its class's code in its key (`name@code-1a2b3c4d5e6f`, `harness.code_digest`): its author may
forget the version, and a changed recorder must not be served its predecessor's arrays silently. Any
edit of the class (a comment too) records it again. The digest is taken at the key's first use, not as
the class registers: the module has then run to its end, so the helpers, values and attributes it sets
below the class are read too (at registration they did not exist yet, and an edit of them kept the key).
A key used while that module still runs (a class attribute, a module it imports) is not kept for the class.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np
import torch
from torch import nn

from harness.code_digest import code_digest
from harness.prepared import PreparedData
from harness.registry import Registry


@dataclass(frozen=True)
class RecorderRequest:
    """A recorder by name with its parameters; hashable so the planner can take unions."""

    name: str
    params: tuple[tuple[str, Any], ...] = ()

    @staticmethod
    def of(name: str, **params: Any) -> RecorderRequest:
        return RecorderRequest(name, tuple(sorted(params.items())))

    @property
    def key(self) -> str:
        """The name under which the run's record keeps this recorder's arrays; a recorder class's
        `version` above 1 is part of it, so records of an older version never match (module docstring)."""
        key = self.name if not self.params else f"{self.name}[{','.join(f'{k}={v}' for k, v in self.params)}]"
        version = recorder_version(self.name)
        key = key if version == 1 else f"{key}@v{version}"
        digest = recorder_digest(self.name)
        return key if digest is None else f"{key}{CODE_MARK}{digest}"


#: what separates a recorder's key from the digest of its code (`RecorderRequest.key`)
CODE_MARK = "@code-"


class RunArrays(Protocol):
    """What a reader of a run's records needs: the named arrays of one recorder key. A stored run
    (`harness.store.StoredRun`), a finished bank's `Records` and test doubles all offer it, so
    proxies read records without importing the store."""

    def arrays(self, recorder_key: str) -> dict[str, np.ndarray]: ...


@dataclass
class RunContext:
    """What a recorder may know about the run it is attached to.

    A user's own loop (`harness.tracker.SampleTracker`) has no `data` and no epoch count: there
    `samples` and `classes` say N and C, and `epochs=None` makes per-epoch buffers grow a row at a
    time (`GrowingRows`); recorders that run passes of their own need `data`.
    """

    data: PreparedData | None
    epochs: int | None  # epochs of the (first) training phase; buffers are (epochs, N); None: open-ended
    train_idx: torch.Tensor | None  # samples the first phase trains on
    batch_size: int
    device: torch.device
    seed: int = 0  # the run's seed, for recorders that draw random numbers
    samples: int | None = None  # N without `data`
    classes: int | None = None  # C without `data`

    @property
    def n(self) -> int:
        return self.data.n if self.data is not None else int(self.samples or 0)

    @property
    def num_classes(self) -> int:
        return self.data.num_classes if self.data is not None else int(self.classes or 0)

    @property
    def eval_batch_size(self) -> int:
        """Passes without an optimizer step take bigger batches: fewer launches, same results."""
        return 4 * self.batch_size


class GrowingRows:
    """An (epochs, N) buffer whose epoch count is not known in advance (a user's loop): one (N,)
    row per epoch, made when first indexed, stacked when read. Indexing it like a tensor's first
    dimension (`rows[epoch].index_copy_(...)`) lets recorders write either kind alike."""

    def __init__(self, width: int, dtype: torch.dtype, fill: float, device: torch.device) -> None:
        self.width, self.dtype, self.fill, self.device = width, dtype, fill, device
        self.rows: list[torch.Tensor] = []

    def __getitem__(self, row: int) -> torch.Tensor:
        if row < 0:
            raise IndexError(f"row {row} of an open-ended buffer")
        while len(self.rows) <= row:
            self.rows.append(torch.full((self.width,), self.fill, dtype=self.dtype, device=self.device))
        return self.rows[row]

    def numpy(self, rows: int | None = None) -> np.ndarray:
        """The first `rows` rows (default: all made) as one (rows, N) array."""
        rows = len(self.rows) if rows is None else rows
        if rows:
            self[rows - 1]
        if not rows:
            return torch.empty((0, self.width), dtype=self.dtype).numpy()
        return torch.stack(self.rows[:rows]).cpu().numpy()


class Recorder:
    name: ClassVar[str]
    description: ClassVar[str] = ""
    #: What the arrays mean: bump when the same run would record other values (module docstring)
    version: ClassVar[int] = 1
    #: Called twice with the same arguments, the recorder leaves what one call leaves (it writes by
    #: index, or resets its rows first): its first call then runs once under the FLOP counter and
    #: once timed, so its seconds are its own and not the counter's (`harness.timing.Meter`). A
    #: recorder that carries state from call to call (a counter, a running sum) keeps it False.
    repeatable: ClassVar[bool] = False
    on_batches: ClassVar[bool] = False  # wants on_batch during training passes
    #: `on_batch` computes per-sample values only, so the harness's loop may hand it an epoch's
    #: batches joined as one, after the epoch, instead of each batch after its step
    joins_batches: ClassVar[bool] = False
    #: takes eval-mode signals from a pass someone else ran (`on_eval_batch`): the batched ensemble's,
    #: a user's loop's
    takes_eval: ClassVar[bool] = False
    phases: ClassVar[tuple[int, ...]] = (1,)

    def __init__(self, ctx: RunContext, **params: Any) -> None:
        self.ctx = ctx
        self.params = params
        self.buffers: dict[str, torch.Tensor | GrowingRows] = {}

    def on_batch(
        self, epoch: int, idx: torch.Tensor, logits: torch.Tensor | None, loss: torch.Tensor,
        labels: torch.Tensor | None
    ) -> None:
        """Training pass, after the step; tensors are detached. A user's loop may give losses alone
        (no logits, no labels), and held batches come without the logits nobody reads."""

    def on_epoch_end(self, epoch: int, phase: int, model: nn.Module | None) -> None:
        """At the checkpoint after `epoch` (0-based, within `phase`). A user's loop has no model to
        hand over (None): only recorders that need none are made there."""

    def on_eval_start(self, epoch: int) -> None:
        """Before the first batch of an eval pass fed through `on_eval_batch` after `epoch`."""

    def on_eval_batch(self, epoch: int, idx: torch.Tensor, signals: dict[str, torch.Tensor]) -> None:
        """One batch of an eval pass after `epoch` run elsewhere: `eval_signals` of samples `idx`."""

    def active(self, epoch: int, phase: int) -> bool:
        """Whether `on_epoch_end` does work at this checkpoint; cost is charged per active call."""
        return phase in self.phases

    def buffer(self, name: str, shape: tuple[int | None, int] | tuple[int, ...], dtype: torch.dtype = torch.float32,
               fill: float = 0.0):
        """A device buffer; a first dimension of None (open-ended epochs) makes `GrowingRows`."""
        first, *rest = shape
        if first is None:
            (width,) = rest
            self.buffers[name] = GrowingRows(int(width), dtype, fill, self.ctx.device)
        else:
            self.buffers[name] = torch.full((first, *rest), fill, dtype=dtype, device=self.ctx.device)
        return self.buffers[name]

    def arrays(self, rows: int | None = None) -> dict[str, np.ndarray]:
        """Host copies of the buffers; open-ended ones as their first `rows` rows."""
        return {k: v.numpy(rows) if isinstance(v, GrowingRows) else v.cpu().numpy() for k, v in self.buffers.items()}

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        for k, v in arrays.items():
            buffer = self.buffers[k]
            assert isinstance(buffer, torch.Tensor)  # only the harness's runs resume, and their epochs are known
            buffer.copy_(torch.from_numpy(v))


RECORDERS: Registry[type[Recorder]] = Registry("recorder")
#: recorder name -> (the class registered under it, the code digest in its key), for recorders registered
#: outside memprox, taken at the key's first use (`recorder_digest`)
_DIGESTS: dict[str, tuple[type, str]] = {}
#: id -> class of the recorders outside memprox that `register_recorder` took: their code is part of their key
#: (by id: a metaclass may make a class unhashable). A class put in `RECORDERS` otherwise (a test's) has none.
_OUTSIDE: dict[int, type] = {}

#: The final model's eval pass over every training sample: held-out probabilities of fold models,
#: the stability reference's correctness, final loss. The one definition every user imports.
EVAL_LAST = RecorderRequest.of("eval_pass", epochs="last")


def register_recorder(cls: type[Recorder]) -> type[Recorder]:
    """Class decorator; a second recorder under a taken name is an error, not a silent overwrite,
    and so is a `version` that is not an int >= 1 (it would make keys no store can match again)."""
    version = getattr(cls, "version", 1)
    if type(version) is not int or version < 1:
        raise TypeError(f"recorder {cls.__name__}.version must be an int >= 1, not {version!r}")
    RECORDERS.register(cls.name, cls)
    if not cls.__module__.startswith("harness."):
        _OUTSIDE[id(cls)] = cls
    return cls


def recorder_digest(name: str) -> str | None:
    """The code digest in the key of a recorder registered outside memprox (a plugin's or a user's: None
    for memprox's own and for names not registered), taken at its first use once the module that registered
    it has run to its end (module docstring) and kept for the class: one process keeps one key for the code
    it runs."""
    if name not in RECORDERS or _OUTSIDE.get(id(cls := RECORDERS[name])) is not cls:
        return None
    held = _DIGESTS.get(name)
    if held is None or held[0] is not cls:  # a class registered anew (a reload, a plugin's half import undone)
        held = (cls, code_digest(cls, 12))
        if not _still_running(cls.__module__):
            _DIGESTS[name] = held
    return held[1]


def _still_running(module: str) -> bool:
    """Whether the body of `module` (not a script's or notebook's `__main__`, whose body is the whole run) is
    still running: a key used there (a class attribute, a module it imports in turn, an import or reload)
    reads none of what is defined below; kept, it stayed the key of the whole process, and an edit of a
    helper defined below the use reused the old code's arrays."""
    namespace = getattr(sys.modules.get(module), "__dict__", None)
    if module == "__main__" or namespace is None:
        return False
    if getattr(getattr(sys.modules[module], "__spec__", None), "_initializing", False):
        return True  # importing, in another thread too (its frames are not this thread's)
    frame = sys._getframe(1)
    while frame is not None and not (frame.f_code.co_name == "<module>" and frame.f_globals is namespace):
        frame = frame.f_back  # type: ignore[assignment]
    return frame is not None


def recorder_version(name: str) -> int:
    """The registered recorder's `version`; 1 for a name not registered (yet), whose key is its
    pre-version key."""
    return RECORDERS[name].version if name in RECORDERS else 1


def build_recorder(request: RecorderRequest, ctx: RunContext) -> Recorder:
    return RECORDERS.get(request.name)(ctx, **dict(request.params))


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode for the block, then the model's own mode again: passes run between training steps
    (recorders, accuracy) must hand the loop back a model that still trains."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def eval_batches(
    model: nn.Module, data: PreparedData, idx: torch.Tensor, batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Eval-mode logits over samples `idx`, no augmentation, no grad; restores the model's mode."""
    with eval_mode(model), torch.no_grad():
        for start in range(0, len(idx), batch_size):
            b = idx[start : start + batch_size]
            yield b, model(data.inputs(b))
