"""Which proxies a tracker computes: the ones it was asked for, or every one the recorded signals
allow, and a clear error for a proxy it cannot supply (one that trains runs of its own, reads a
recorder only memprox's training loop has, or needs a pass or epochs that were not recorded)."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence

from harness.errors import HarnessError
from harness.recipe import Recipe
from harness.recorders import EVAL_LAST, RECORDERS, RecorderRequest
from harness.recorders.train_pass import PerEpochRecorder
from harness.runspec import DataSpec, RunSpec
from proxies import Proxy, available_proxies, resolve_proxies

#: The tracker's stand-in for "the base run": proxies ask for their recorders on it.
BASE = RunSpec(data=DataSpec(dataset="user"), model="user", recipe=Recipe())
#: The training-pass recorders by key (a recorder's `version` above 1 is part of its key).
TRAIN_REQUESTS = {RecorderRequest.of(name).key: RecorderRequest.of(name)
                  for name, cls in RECORDERS.items() if issubclass(cls, PerEpochRecorder)}
TRAIN_KEYS = tuple(TRAIN_REQUESTS)
LOSS_KEY = RecorderRequest.of("train_loss").key  # the one signal running sums keep
EVAL_ALL_KEY = RecorderRequest.of("eval_pass", epochs="all").key
EVAL_LAST_KEY = EVAL_LAST.key
#: Proxies that say nothing with fewer epochs: forgetting counts transitions between epochs,
#: variability is a standard deviation over epochs.
MIN_EPOCHS = {"forgetting": 2, "variability": 2}


def trackable() -> list[Proxy]:
    """Every registered proxy (plugins included) that reads only signals the tracker records."""
    out = []
    for cls in available_proxies().values():
        try:  # a plugin whose defaults cannot be built, or that asks for an unregistered recorder, is
            proxy = cls()  # not ours to report here (`memprox run` refuses it); it broke every tracker
            needs = proxy.needs(BASE)
            keys = {r.key for r in needs[0].recorders} if len(needs) == 1 and needs[0].spec == BASE else None
        except Exception as e:
            warnings.warn(f"proxy {getattr(cls, 'name', cls.__name__)} ({cls.__module__}) is left out of the tracker: "
                          f"{e}", RuntimeWarning, stacklevel=2)
            continue
        if keys is not None and keys <= {*TRAIN_KEYS, EVAL_ALL_KEY, EVAL_LAST_KEY}:
            out.append(proxy)
    return out


class ProxySelection:
    """A tracker's proxies and the recorders they need: `train_keys` (training-pass recorders to
    run on every batch) and `keep_eval_history` (whether every eval pass is kept, for csl_eval)."""

    def __init__(self, proxies: Sequence[str | Proxy] | str | None, running_sums: bool) -> None:
        self.running_sums = running_sums
        self.selected = None if proxies is None else self.resolve(proxies)
        if self.selected is not None:
            keys = set().union(*(self.keys_of(p) for p in self.selected))
            self.train_keys = tuple(k for k in TRAIN_KEYS if k in keys)
            self.keep_eval_history = EVAL_ALL_KEY in keys
        else:
            self.train_keys = (LOSS_KEY,) if running_sums else TRAIN_KEYS
            self.keep_eval_history = True
        self.logit_keys = [k for k in self.train_keys if k != LOSS_KEY]

    def resolve(self, proxies: Sequence[str | Proxy] | str | Proxy) -> list[Proxy]:
        """Proxies from names (a comma-separated string too, as `--proxies` takes it; "all" alone:
        every proxy this tracker can compute) and Proxy objects."""
        items = [proxies] if isinstance(proxies, (str, Proxy)) or not isinstance(proxies, Iterable) else list(proxies)
        strange = [p for p in items if not isinstance(p, (str, Proxy))]
        if strange:
            raise HarnessError(f"proxies must be proxy names ('csl', 'csl,aum', 'in_confidence(variant=max)', 'all') "
                               f"or Proxy objects, got {type(strange[0]).__name__}")
        names = ",".join(p for p in items if isinstance(p, str))
        if names.strip() == "all":
            chosen = self.everything()
        else:
            chosen = resolve_proxies(names) if names else []
        chosen += [p for p in items if isinstance(p, Proxy)]
        if not chosen:  # an empty selection would record nothing and score only the index and label columns
            raise HarnessError(f"proxies selects no proxy (got {proxies!r}); name some ('csl', 'csl,aum', 'all'), or "
                               "pass proxies=None for every proxy the recorded signals allow")
        for proxy in chosen:
            self.keys_of(proxy)
        return chosen

    def everything(self) -> list[Proxy]:
        """`proxies="all"`: every registered proxy the tracker can compute with its settings."""
        out = []
        for proxy in trackable():
            try:
                self.keys_of(proxy)
            except HarnessError:  # running_sums=True: csl alone
                continue
            out.append(proxy)
        return out

    def keys_of(self, proxy: Proxy) -> set[str]:
        """The recorder keys a proxy reads, or a HarnessError if the tracker cannot supply them."""
        supported = [p.label for p in trackable()]
        needs = proxy.needs(BASE)
        if len(needs) != 1 or needs[0].spec != BASE:
            raise HarnessError(f"{proxy.label} trains runs of its own, which only `python -m harness run` does; "
                               f"the tracker computes {', '.join(supported)}")
        keys = {r.key for r in needs[0].recorders}
        unknown = keys - set(TRAIN_KEYS) - {EVAL_ALL_KEY, EVAL_LAST_KEY}
        if unknown:
            raise HarnessError(f"{proxy.label} needs {', '.join(sorted(unknown))}, which only memprox's own training "
                               f"loop records; the tracker computes {', '.join(supported)}")
        if self.running_sums and proxy.name != "csl":
            raise HarnessError(f"running_sums=True keeps only the running loss sum that csl needs, not what "
                               f"{proxy.label} reads; use SampleTracker(running_sums=False) (O(N x epochs) memory)")
        return keys

    def default(self, recorded: set[str], epochs: int, all_had_logits: bool) -> list[Proxy]:
        """The selected proxies, else every trackable one the recorded signals allow."""
        if self.selected is not None:
            return self.selected
        out = []
        for proxy in trackable():
            try:
                keys = self.keys_of(proxy)
            except HarnessError:
                continue
            if keys <= recorded and epochs >= MIN_EPOCHS.get(proxy.name, 1):
                if any(k != LOSS_KEY and k in TRAIN_KEYS for k in keys) and not all_had_logits:
                    continue
                out.append(proxy)
        return out

    def recorded_before_finish(self, eval_at: list[int], epochs: int) -> set[str]:
        """The recorder keys the open record will give when it finishes (`TrackedSignals.to_host`: every
        training-pass recorder, and the eval passes by `EvalPasses.offer`'s rule), for `check_available`
        before `finish()` ends the recording."""
        keys = set(self.train_keys)
        if eval_at and eval_at[-1] == epochs:
            keys.add(EVAL_LAST_KEY)
        if eval_at == list(range(1, epochs + 1)):
            keys.add(EVAL_ALL_KEY)
        return keys

    def check_available(self, proxy: Proxy, recorded: set[str], epochs: int, all_had_logits: bool,
                        eval_at: list[int]) -> None:
        """A HarnessError naming what to call or pass when `proxy` cannot be scored."""
        keys = self.keys_of(proxy)
        need = MIN_EPOCHS.get(proxy.name, 1)
        if epochs < need:
            raise HarnessError(f"{proxy.label} needs at least {need} epochs, the tracker recorded {epochs}")
        for key in sorted(keys):
            if key in recorded and key in TRAIN_KEYS and key != LOSS_KEY and not all_had_logits:
                raise HarnessError(f"{proxy.label} reads {key}, which this tracker recorded for only some batches: "
                                   "some update() calls had no logits; pass logits= and labels= to every update()")
            if key in recorded:
                continue
            if key == EVAL_ALL_KEY:
                fix = (f"call eval_epoch(model, data) after every epoch (passes ran after epochs "
                       f"{eval_at or 'none'} of {epochs})")
            elif key == EVAL_LAST_KEY:
                fix = f"call eval_epoch(model, data) after the last end_epoch() (epoch {epochs})"
            elif key not in self.train_keys:
                fix = f"select it when creating the tracker: SampleTracker(n, proxies=[..., {proxy.label!r}])"
            else:
                fix = "pass logits= and labels= to every update()"
            raise HarnessError(f"{proxy.label} reads {key}, which this tracker did not record; {fix}")
