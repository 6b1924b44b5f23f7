"""The notice, before training, that stored runs train again to add recorders they lack.

A stored run is reused only when it carries every recorder the experiment's proxies and tasks ask
of it; one that lacks some (stored before a recorder existed, or by an experiment that did not ask
for it) trains again in full, recording its other signals again along with the new ones. On
CIFAR-10 that is half an hour a run, so it is said once, before anything trains: how many runs
(a few labels), which recorders they lack, who asked for them, and how to do without them when
there is a way (drop the proxy; a task may name its own, as suspects' `suggest=off`).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from harness.recorders.base import CODE_MARK
from harness.runspec import RunSpec
from harness.tasks import Task

#: Who asked for a recorder: ("proxy", its label) or ("task", its name).
Asker = tuple[str, str]
#: Run labels named in the line; the rest are counted ("and N more").
SHOWN = 3
#: Why a recorder keyed by its code's digest is lacking beyond the reasons of every recorder: its code was
#: edited, or memprox upgraded its digest. The second is the one a user upgrading memprox meets with code
#: left as it was (a list filled by a loop, read since 5 December 2026, gave a new key): the line named only
#: an edit, which sent them looking for one. docs/extending.md lists what the digest began to read, and when.
EDITED = (", or before its code was edited (its key carries a digest of its code), or by a memprox whose code digest "
          "read less of it (after an upgrade of memprox, a recorder of yours may record again once with no edit of "
          "yours: docs/extending.md says what the digest began to read, and when)")


@runtime_checkable
class ExplainsRetraining(Protocol):
    """A task that can do without a recorder it asks for (a parameter that turns off what reads it)."""

    def retraining_hint(self, key: str) -> str | None:
        """What to pass so a stored run lacking recorder `key` is reused as it is; None: no way."""
        ...


def upgrade_notice(upgraded: dict[RunSpec, set[str]], askers: dict[RunSpec, dict[str, set[Asker]]],
                   tasks: Iterable[Task], selected: Sequence[str] | None = None, paste: bool = False) -> str | None:
    """The line for the stored runs in `upgraded` (each with the recorder keys it lacks), naming who
    asked for those recorders (`askers`, from the plan) and the way to reuse the runs as they are:
    drop the proxies, and each task's own hint; when a task that asked has none, no way is offered.
    `selected`: the labels of the experiment's proxies (None: not known), so a way that drops them
    all (no experiment runs without one) is not offered; `paste`: the way names the rest of them to
    paste (for `--proxies all`, from which nothing can be dropped). None when no stored run trains again."""
    upgraded = {spec: lacking for spec, lacking in upgraded.items() if lacking}
    if not upgraded:
        return None
    who: dict[str, set[Asker]] = {}
    for spec, lacking in upgraded.items():
        for key in lacking:
            who.setdefault(key, set()).update(askers.get(spec, {}).get(key, set()))
    ways = _ways(who, tasks, selected, paste)
    labels = [spec.label() for spec in upgraded]
    shown = ", ".join(labels[:SHOWN]) + (f" and {len(labels) - SHOWN} more" if len(labels) > SHOWN else "")
    by_askers: dict[tuple[Asker, ...], list[str]] = {}  # recorders asked by the same proxies and tasks, together
    for key, found in sorted(who.items()):
        by_askers.setdefault(tuple(sorted(found)), []).append(key)
    lack = ", ".join(", ".join(keys) + (f" (asked by {', '.join(map(_name, found))})" if found else "")
                     for found, keys in by_askers.items())
    way = f"; to avoid it, {' and '.join(ways)}" if ways else ""
    edited = EDITED if any(CODE_MARK in key for key in who) else ""
    return (f"{len(upgraded)} stored run(s) ({shown}) lack recorder(s) {lack}: stored before the recorder "
            f"existed, or by an experiment that did not ask for it{edited}, they train again in full before anything "
            f"is scored, recording their other signals again along with it{way}")


def warn_upgraded(upgraded: dict[RunSpec, set[str]], askers: dict[RunSpec, dict[str, set[Asker]]],
                  tasks: Iterable[Task], selected: Sequence[str] | None = None, paste: bool = False) -> None:
    """One warning line, before training, when stored runs train again to add recorders (`upgrade_notice`)."""
    line = upgrade_notice(upgraded, askers, tasks, selected, paste)
    if line is not None:
        warnings.warn(line, stacklevel=3)


def _ways(who: dict[str, set[Asker]], tasks: Iterable[Task], selected: Sequence[str] | None,
          paste: bool) -> list[str] | None:
    """What to pass so that no recorder in `who` is asked for: the proxies dropped, and each task's
    hint; None when some recorder has an asker without a way (a task without a hint, or no one known)
    or when the proxies to drop are all of `selected`."""
    hints = {t.name: t for t in tasks if isinstance(t, ExplainsRetraining)}
    drop = sorted({name for found in who.values() for kind, name in found if kind == "proxy"})
    ways = []
    if drop:
        rest = [label for label in selected or () if label not in drop]
        if selected is not None and not rest:
            return None
        ways.append(f"drop {', '.join(drop)} from --proxies{paste_proxies(rest) if paste else ''}")
    for key, found in sorted(who.items()):
        if not found:
            return None
        for kind, name in sorted(found):
            if kind == "proxy":
                continue
            hint = hints[name].retraining_hint(key) if name in hints else None
            if hint is None:
                return None
            if hint not in ways:
                ways.append(hint)
    return ways


def paste_proxies(rest: Sequence[str]) -> str:
    """", e.g. --proxies 'a,b'": the proxies `rest` as a selection to paste, quoted since labels hold
    ( ) for the shell; "" when none is left. Said by this notice and by the text check
    (`harness.plan_checks`), so the two ways out read alike."""
    return f", e.g. --proxies '{','.join(rest)}'" if rest else ""


def _name(asker: Asker) -> str:
    kind, name = asker
    return name if kind == "proxy" else f"task {name}"


def model_code_notice(root: Path, todo: Iterable[RunSpec]) -> str | None:
    """The line for runs about to train of a model registered outside memprox that the store at `root` holds
    under another digest of the model's code (the same run, `model_sha` aside): its code was edited, or memprox's
    code digest reads more of it after an upgrade. Such runs trained with nothing said (attdig2_31: a registry
    filled by another module's decorator, read since digest31, retrained every run of an unchanged plugin after
    the upgrade from 9b2283e), which sent the user looking for an edit or for a store fault. Reads the
    manifests' `spec` alone (no checksum), and only when such a run is to train. None when none is held."""
    wanted = {_without_sha(spec.to_dict()): spec for spec in todo if spec.model_sha}
    if not wanted:
        return None
    found: dict[str, tuple[RunSpec, set[str]]] = {}
    for name in sorted(os.listdir(root / "runs")) if (root / "runs").is_dir() else []:
        try:
            with open(root / "runs" / name / "manifest.json", encoding="utf-8") as handle:
                spec = json.load(handle).get("spec")
        except (OSError, ValueError, AttributeError):  # damaged or foreign: the store's own checks say so
            continue
        held = spec.get("model_sha") if isinstance(spec, dict) else None
        if not (isinstance(held, str) and held):  # memprox's own model, or no spec
            continue
        match = wanted.get(_without_sha(spec))
        if match is not None and held != match.model_sha:
            found.setdefault(match.label(), (match, set()))[1].add(held)
    if not found:
        return None
    labels = list(found)
    shown = ", ".join(labels[:SHOWN]) + (f" and {len(labels) - SHOWN} more" if len(labels) > SHOWN else "")
    models = sorted({spec.model for spec, _ in found.values()})
    was = ", ".join(sorted({sha for _, shas in found.values() for sha in shas}))
    now = ", ".join(sorted({spec.model_sha for spec, _ in found.values()}))
    return (f"{len(found)} run(s) ({shown}) of model {', '.join(models)} train again: the store holds them under "
            f"another digest of the model's code ({was}; now {now}), so they are another model's runs. Either its "
            "code or a file it reads was edited, or this memprox's code digest reads more of it than the one that "
            "stored them (after an upgrade of memprox a model of yours may train again once with no edit of "
            "yours: docs/extending.md says what the digest began to read, and when)")


def warn_model_code(root: Path, todo: Iterable[RunSpec]) -> None:
    """One warning line, before training, for the runs `model_code_notice` finds."""
    line = model_code_notice(root, todo)
    if line is not None:
        warnings.warn(line, stacklevel=3)


def _without_sha(spec: dict) -> str:
    """A run's spec as canonical text, `model_sha` aside: the same run of another code of its model."""
    return json.dumps({k: v for k, v in spec.items() if k != "model_sha"}, sort_keys=True, default=str)

