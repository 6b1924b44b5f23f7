"""What a worker process must import before a job: the modules outside memprox that registered the
job's recorders, model or dataset. Workers import memprox afresh, so they know memprox's own and the
installed `memprox.datasets` plugins, and a recorder or model from a plugin package (or a module of
the user's on the path) only once that module is imported there. A registration the module does not
make when imported (a script run as `__main__`, a notebook cell, a function that registers at run
time) cannot reach a worker at all: refused before anything trains, after one fresh interpreter
checked it, instead of failing every run in its worker with "unknown recorder". That process also
computes the code digests of the job's recorders and model (`harness.code_digest`): one that reads a
value set anew in every process (`RUN_ID = str(uuid.uuid4())`), or a module edited since this process
imported it, gave the workers' recorder keys that this process never looked up (the proxy failed with
"did not record", and every run trained again), and is refused too, naming the value."""

from __future__ import annotations

import importlib
import importlib.util
import json
import subprocess
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from harness.code_digest import code_read, settings_read
from harness.code_source import edited_since_import
from harness.datasets.base import registered_here_only as dataset_registered_here_only
from harness.errors import HarnessError
from harness.model_registry import MODELS, model_fingerprint
from harness.model_registry import registered_here_only as model_registered_here_only
from harness.recorders import RECORDERS, RecorderRequest
from harness.runspec import RunSpec

if TYPE_CHECKING:
    from harness.executors import Executor
    from harness.jobs import Pending

#: Seconds the fresh interpreter may take to import torch, memprox and the modules.
CHECK_TIMEOUT_S = 300

Registration = tuple[str, str, str]  # (what, name, module): ("recorder", "walk_entropy", "walkext.entropy")


def registrations(spec: RunSpec, requests: Iterable[RecorderRequest]) -> list[Registration]:
    """The job's recorders, dataset and model that a module outside memprox registered."""
    found = {("recorder", r.name, module) for r in requests
             if not (module := RECORDERS.get(r.name).__module__).startswith("harness.")}
    kind = spec.data.dataset.partition(":")[0]
    for what, name, outside in (("dataset", kind, dataset_registered_here_only(kind)),
                                ("model", spec.model, model_registered_here_only(spec.model))):
        if outside is not None:  # None: memprox's own, or (a dataset) an installed plugin the workers load
            found.add((what, name, outside))
    return sorted(found)


def job_imports(specs: Iterable[RunSpec], requests: Iterable[RecorderRequest], executor: Executor
                ) -> tuple[str, ...]:
    """The modules a worker imports before it trains these specs (none for memprox's own, none
    when jobs run in this process, which has them)."""
    if executor.runs_jobs_here:
        return ()
    requests = tuple(requests)
    return tuple(sorted({module for spec in specs for _, _, module in registrations(spec, requests)}))


def import_modules(modules: Iterable[str]) -> None:
    """In a worker: import the job's modules, which register what it uses; one line when one is missing."""
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as e:
            raise RuntimeError(f"the worker cannot import {module} ({type(e).__name__}: {e}), which registers a "
                               "recorder, model or dataset of this job: install it where the workers run") from e


def check_workers_know(pending: Pending, executor: Executor) -> None:
    """Refuse what a fresh worker would not know: a registration in `__main__` or a module that
    cannot be imported, or one its module does not make when imported (checked in a fresh
    interpreter, with this process's path, only when there is anything outside memprox). Jobs run
    in this process (`--executor inprocess`) need no fresh one, only code whose file is still its code."""
    needed = sorted({r for spec, requests in pending for r in registrations(spec, requests)})
    if executor.runs_jobs_here:
        _refuse_edited(needed, executor.name)
        return
    if not needed:
        return
    for what, name, module in needed:
        if module == "__main__" or not _importable(module):
            raise _refused(what, name, module, executor.name, "which a fresh process cannot import")
    lacking, digests = _fresh_process(needed)
    for what, name, module, why in lacking:
        raise _refused(what, name, module, executor.name, why)
    for what, name, module in needed:
        if what in DIGESTED and digests[f"{what}:{name}"][0] != _digest(what, name)[0]:
            raise _digest_differs(what, name, module, executor.name, digests[f"{what}:{name}"][1])


def _refuse_edited(needed: list[Registration], executor_name: str) -> None:
    """Refuse a model or recorder whose module was edited since this process imported it: its digest
    reads the file as it is now, and this process would run the code it imported, storing the old
    code's runs or arrays where a fresh process, running the new code, looks them up
    (`code_source.edited_since_import`; a recorder's key is taken at its first use, `recorder_digest`).
    No process is started: a value set anew in every process is not checked here. It gives the runs a
    new address in every process, never reused but never served as another model's. (The fresh-process
    check of the other executors would start one interpreter more per experiment where this executor
    starts none, and refuse a monkeypatched module value, which this executor is for; docs/extending.md.)"""
    for what, name, module in needed:
        if what not in DIGESTED:
            continue
        read = code_read(_digested(what, name))
        if edited := edited_since_import(read):
            # the modules edited (the registering one alone was named: reloading it left another one's edit in place),
            # reloaded before the registering one, which holds what it imported from them
            files = sorted({str(o.__module__) for o in read if getattr(o, "__qualname__", None) in edited}) or [module]
            order = [f for f in files if f != module] + [module]
            fix = "run the script again (a script cannot be reloaded)" if "__main__" in order else \
                f"importlib.reload {' then '.join(order)}, or restart the process (the notebook's kernel)"
            runs, does = ("runs", "train") if what == "model" else ("arrays", "record with")
            raise HarnessError(
                f"{what} {name!r} is addressed in the run store by a digest of its code, read from its file as it is "
                f"now, and {', '.join(files)} was edited since this process imported it (changed: "
                f"{', '.join(edited)}): the {executor_name} executor would {does} the code imported before, and store "
                f"its {runs} where the edited {what}'s are looked up. {fix}")


#: What is addressed by a digest of its code: a recorder by its key, a model by its runs' address.
DIGESTED = ("recorder", "model")


def _digested(what: str, name: str) -> Any:
    """The code a registration's digest reads: a recorder's class, a model's factory."""
    return RECORDERS[name] if what == "recorder" else MODELS[name].factory


def _digest(what: str, name: str) -> tuple[str, dict[str, str]]:
    """The key (a recorder) or code digest (a model) of a registration, with the module values it reads."""
    key = RecorderRequest.of(name).key if what == "recorder" else model_fingerprint(name)
    return key, settings_read(_digested(what, name))


def _digest_differs(what: str, name: str, module: str, executor_name: str, fresh: dict[str, str]) -> HarnessError:
    """The refusal of a registration whose digest a fresh process computes otherwise, naming the values read."""
    here = _digest(what, name)[1]
    differ = [f"{k} is {here.get(k, 'not read')} here and {fresh.get(k, 'not read')} there"
              for k in sorted(set(here) | set(fresh)) if here.get(k) != fresh.get(k)]
    why = (f"reads a module value set anew in every process, or changed by a module this process imported and a "
           f"worker, importing {module} alone, does not ({'; '.join(differ)})" if differ else
           f"has other code there: was {module} edited since this process imported it? Restart it (the notebook's "
           "kernel) or importlib.reload the module")
    harm = ("store its arrays under a key this process does not look up: every proxy reading it would fail, and "
            "every run train again" if what == "recorder" else
            "train it under an address no later run computes again: its runs would never be reused")
    fix = (" Make that a constant of the module or, if it does not change what is recorded or trained, set it "
           "where the digest does not look (inside a function: another module of yours is read too); if another "
           f"module changes it as it is imported (a plugin's), import that module in {module}" if differ else "")
    return HarnessError(f"{what} {name!r} is addressed in the run store by a digest of its code (docs/extending.md), "
                        f"and its digest in a fresh process differs from this process's: its code {why}. The "
                        f"{executor_name} executor's workers would {harm}.{fix}")


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package that fails, a module without a spec
        return False


def _fresh_process(needed: list[Registration]
                   ) -> tuple[list[tuple[str, str, str, str]], dict[str, tuple[str, dict[str, str]]]]:
    """The registrations a fresh interpreter with this process's path does not have after
    importing their modules, each with why: (what, name, module, reason); and the digests
    (`_digest`) it computes of those it has, by `what:name`."""
    proc = subprocess.run([sys.executable, "-c", _CHECK, json.dumps([sys.path, needed])], capture_output=True,
                          text=True, timeout=CHECK_TIMEOUT_S)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise HarnessError(f"checking in a fresh process that workers can import {', '.join(m for _, _, m in needed)} "
                           f"failed: {tail}")
    lacking, digests = json.loads(proc.stdout.strip().splitlines()[-1])
    return [tuple(row) for row in lacking], {k: (key, read) for k, (key, read) in digests.items()}


def _refused(what: str, name: str, module: str, executor_name: str, why: str) -> HarnessError:
    return HarnessError(
        f"{what} {name!r} is registered in this process only (by {module}, {why}), and the {executor_name} "
        f"executor trains in worker processes that import memprox afresh; run with --executor inprocess, or "
        f"register it when an importable module is imported (a .py file on the path or "
        f"an installed package: its workers import it; a dataset may be a `memprox.datasets` entry point instead, "
        f"docs/extending.md)")


_CHECK = """
import importlib, json, sys
path, needed = json.loads(sys.argv[1])
sys.path[:0] = [p for p in path if p not in sys.path]
from harness.datasets import DATASETS
from harness.model_registry import MODELS
from harness.recorders import RECORDERS
from harness.worker_imports import DIGESTED, _digest
registries = {"recorder": RECORDERS, "dataset": DATASETS, "model": MODELS}
lacking, digests = [], {}
for what, name, module in needed:
    try:
        importlib.import_module(module)
    except Exception as e:
        lacking.append([what, name, module, f"which fails to import in a fresh process: {type(e).__name__}: {e}"])
        continue
    if name not in registries[what]:
        lacking.append([what, name, module, "which does not register it when imported"])
    elif what in DIGESTED:
        digests[f"{what}:{name}"] = _digest(what, name)
print(json.dumps([lacking, digests]))
"""
