"""The figures of a run_gpu_session.sh call as markdown to paste into benchmarks/README.md.

Reads what the session brings back (session.log, checks.tgz, full-cifar10.tgz in one folder) or the
session's work folder (checks/, full/), so the same summary can be made on the device, at the end of
every stage, and again here from the returned files:

    python benchmarks/summarize_gpu_session.py "$OUT" "$OUT/summary.md"      # what run_gpu_session.sh does
    python benchmarks/summarize_gpu_session.py /work/.device/files/ summary.md
    python benchmarks/summarize_gpu_session.py "$OUT" --check   # exit 1 if $OUT would not all come back

Standard library only, and it never fails on a missing or partial file: a stage that did not run or
was stopped by the budget is said so, and the other sections are still written.
"""

from __future__ import annotations

import csv
import io
import json
import re
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


class Files:
    """Text of the session's files by their path under the work folder (checks/..., full/...), from
    loose files or from the .tgz archives beside them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.members: dict[str, bytes] = {}
        for archive in sorted(root.glob("*.tgz")):
            try:
                with tarfile.open(archive) as tar:
                    for m in tar.getmembers():
                        f = tar.extractfile(m) if m.isfile() else None
                        if f is not None:
                            self.members[m.name] = f.read()
            except (OSError, tarfile.TarError, EOFError):
                continue  # an archive cut short: its stage's section says it is missing

    def text(self, name: str) -> str | None:
        path = self.root / name
        if path.is_file():
            return path.read_text(errors="replace")
        data = self.members.get(name)
        return None if data is None else data.decode(errors="replace")

    def names(self, pattern: str) -> list[str]:
        loose = [str(p.relative_to(self.root)) for p in self.root.glob(pattern) if p.is_file()]
        packed = [n for n in self.members if Path(n).match(pattern)]
        return sorted(set(loose) | set(packed))

    def json(self, name: str) -> dict | None:
        text = self.text(name)
        try:
            return None if text is None else json.loads(text)
        except json.JSONDecodeError:
            return None


def fmt(value: object, digits: int = 3) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, (int, float)):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.{digits}g}" if abs(value) < 1 else f"{value:.{digits + 1}g}"
    return str(value)


def table(header: list[str], rows: list[list[object]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(fmt(v) for v in row) + " |" for row in rows)]


def machine(files: Files) -> list[str]:
    env = files.text("checks/env.txt") or ""
    info = files.text("checks/machine.txt") or ""
    gpu = re.search(r"NVIDIA [A-Z][\w -]*?(?=\s{2}|\s+(On|Off)\b)", info)
    torch_line = env.strip().splitlines()[0] if env.strip() else "torch: unknown (no checks/env.txt)"
    cpus = next((line for line in info.splitlines() if line.strip().isdigit()), "?")
    name = gpu.group(0).strip() if gpu else "no GPU seen by nvidia-smi"
    out = [f"Machine: {name}, {cpus.strip()} CPUs; {torch_line}"]
    if "cuda False" in env:
        out.append("**Device cpu: a rehearsal, not figures to report.**")
    return out


#: A stage's exit status as the stage table says it: `timeout` at the stage's cap, its kill after the
#: grace, the session stopped by SIGTERM (the device call's own limit).
EXITS = {0: "0", 124: "124 (budget cap)", 137: "137 (killed)", 143: "143 (stopped by a signal)"}


def stages(files: Files) -> list[str]:
    log = files.text("session.log")
    if log is None:
        return ["No session.log."]
    rows, notes = [], []
    for line in log.splitlines():
        if m := re.match(r"\[(\w+)\] rc (\d+) in (\d+) s", line):
            rows.append([m.group(1), EXITS.get(int(m.group(2)), m.group(2)), int(m.group(3))])
        elif m := re.match(r"\[(\w+)\] skipped(.*)", line):
            rows.append([m.group(1), "skipped (budget)" if "budget" in m.group(2) else "skipped (no dataset)"
                         if "dataset" in m.group(2) else "skipped", 0])
        elif line.startswith("[") and "] start" not in line:
            notes.append(line)
    if any(note.startswith("[decode]") for note in notes):  # why the data stages did not run
        decode = (files.text("checks/decode.log") or "").strip().splitlines()[-3:]
        notes += ["", "checks/decode.log ends:", "```", *decode, "```"]
    return table(["stage", "exit", "seconds"], rows) + ([""] + notes if notes else [])


def cuda_tests(files: Files) -> list[str]:
    log = files.text("checks/cuda_tests.log")
    if log is None:
        return ["Not run."]
    lines = log.strip().splitlines()
    counts = next((line.strip("= ") for line in reversed(lines) if re.search(r"\d+ (passed|failed|error)", line)),
                  "no pytest summary line (stopped?)")
    failed = [line for line in lines if line.startswith(("FAILED", "ERROR"))]
    skipped = [line for line in lines if line.startswith("SKIPPED")]
    return [f"`{counts}`", *failed, *(["Skipped: " + "; ".join(skipped)] if skipped else [])]


LOOP = ["ratio_wall", "ratio_loop", "bare_images_per_s", "memprox_images_per_s"]


def benchmarks(files: Files) -> list[str]:
    loop, csl, ips = [], [], []
    for name in files.names("checks/*.json") + files.names("checks/*/*.json"):
        if Path(name).stem in ("conv_ensemble", "gpu_packing", "recording"):
            continue
        data = files.json(name) or {}
        for b in data.get("benchmarks", []):
            e = b.get("extra_info", {})
            case = f"{Path(name).relative_to('checks').with_suffix('')}: {e.get('precision')}" \
                   f"{' compiled' if e.get('compile') else ''}, {e.get('epochs')} ep, {e.get('rounds')} rd"
            if b["name"].startswith("test_loop_vs_bare_loop"):
                loop.append([case, *(e.get(k) for k in LOOP), e.get("target_met")])
            elif b["name"].startswith("test_csl_recording_overhead"):
                csl.append([case, e.get("ratio_paired"), e.get("overhead_inloop"), e.get("target_met")])
            elif b["name"].startswith("test_images_per_second"):
                kind = b["name"].split("[", 1)[-1].rstrip("]")
                ips.append([f"{Path(name).stem}: {kind}", e.get("images_per_s"), e.get("side"), e.get("ips_batch")])
    if not (loop or csl or ips):
        return ["No loop benchmark finished."]
    size = ""
    for name in files.names("checks/*.json"):
        if Path(name).stem in ("conv_ensemble", "gpu_packing", "recording"):  # not the loop benchmarks' sizes
            continue
        for b in (files.json(name) or {}).get("benchmarks", []):
            e = b.get("extra_info", {})
            size = f"model {e.get('model')}, n {e.get('n')}, batch {e.get('batch')}, device {e.get('device')}"
    out = [f"Sizes: {size}.", ""]
    if loop:
        out += table(["case", "ratio_wall", "ratio_loop", "bare img/s", "memprox img/s", "≥ 0.95 met"], loop) + [""]
    if csl:
        out += table(["CSL recording", "ratio_paired", "overhead_inloop", "≤ 1.01 met"], csl) + [""]
    if ips:
        out += table(["ResNet-18 step", "images/s", "side", "batch"], ips)
    return out


def recording(files: Files) -> list[str]:
    """test_bench_recording.py: what the training-pass recorders cost on the digits MLP, both cases."""
    data = files.json("checks/recording.json")
    if not data:
        return ["Not run, or stopped before its JSON."]
    rows = []
    for b in data.get("benchmarks", []):
        e = b.get("extra_info", {})
        case = "csl (`train_loss`)" if b["name"].startswith("test_csl") else "4 training-pass recorders"
        rows.append([case, e.get("model"), e.get("device"), e.get("epochs"), e.get("rounds"), e.get("ratio_paired"),
                     e.get("overhead_inloop"), e.get("target_met")])
    return table(["case", "model", "device", "epochs", "rounds", "ratio_paired", "overhead_inloop", "≤ 1.01 met"],
                 rows)


def conv_ensemble(files: Files) -> list[str]:
    data = files.json("checks/conv_ensemble.json")
    if not data:
        return ["Not run, or stopped before its JSON."]
    rows = []
    for b in data.get("benchmarks", []):
        e = b.get("extra_info", {})
        rows.append([e.get(k) for k in ("model", "precision", "k", "chunks", "ensemble_s_per_member_epoch",
                                        "single_s_per_member_epoch", "speedup", "models_per_hour_ensemble",
                                        "models_per_hour_single")])
    return table(["model", "precision", "K", "chunks", "s/member-epoch batched", "alone", "speed-up",
                  "full-CIFAR models/h batched", "alone"], rows)


def full_cifar(files: Files) -> list[str]:
    out = []
    for name in files.names("full/*/summary.json"):
        folder = str(Path(name).parent)
        summary = files.json(name) or {}
        cfg = summary.get("config", {})
        out.append(f"**{Path(folder).name}**: {cfg.get('dataset')} subset {cfg.get('subset')}, preset "
                   f"{cfg.get('preset')}, {cfg.get('recipe', {}).get('epochs')} epochs, "
                   f"{cfg.get('precision')}, device {summary.get('device')}")
        out.append("")
        for run in summary.get("runs", []):
            fit = run.get("flipped_fit")
            out.append(f"- {run.get('label')}: train acc {fmt(run.get('train_acc'))}, test acc "
                       f"{fmt(run.get('test_acc'))}, training {fmt(run.get('train_seconds'))} s"
                       + (f", flipped labels fit {fmt(fit)}" if fit is not None else ""))
        phases = summary.get("phase_seconds", {})
        if phases:
            out.append("- phases (s): " + " · ".join(f"{k} {fmt(v)}" for k, v in phases.items()))
        if summary.get("failures"):
            out.append(f"- failures: {summary['failures']}")
        board = files.text(f"{folder}/leaderboard.csv")
        rows: list[list[Any]] = []
        for r in csv.DictReader(io.StringIO(board or "")):
            if r["metric"] != "auroc" or r["task"] == "cost":
                continue
            ci = f"[{fmt(float(r['ci_low']))}, {fmt(float(r['ci_high']))}]" if r.get("ci_low") else ""
            rows.append([r["task"], r["setting"], r["proxy"], float(r["mean"]), ci,
                         "yes" if r.get("tied_with_best") == "True" else "",
                         float(r["cost_seconds"]) if r.get("cost_seconds") else "",
                         float(r["cost_seconds_rel"]) if r.get("cost_seconds_rel") else ""])
        rows.sort(key=lambda r: (r[0], r[1], -r[3]))
        out += [""] + table(["task", "setting", "proxy", "AUROC", "95% CI", "tied best", "seconds", "seconds / csl's"],
                            rows) if rows else ["No leaderboard (the run was stopped before it wrote one)."]
        scores = files.names(f"{folder}/scores/*")
        out += ["", f"Per-sample scores: {', '.join(Path(s).name for s in scores) or 'none'}", ""]
    logs = [n for n in files.names("full/*.log") if n[:-4] + "/summary.json" not in files.names("full/*/summary.json")]
    for name in logs:
        tail = (files.text(name) or "").strip().splitlines()[-3:]
        out += [f"{Path(name).stem}: no outputs; its log ends:", "```", *tail, "```"]
    return out or ["Not run."]


def gpu_packing(files: Files) -> list[str]:
    data = files.json("checks/gpu_packing.json")
    if not data:
        log = (files.text("checks/gpu_packing.log") or "").strip().splitlines()[-3:]
        return ["Not run, or stopped before its JSON." + (" Log ends: " + " / ".join(log) if log else "")]
    rows = [[r["config"], r["trained"], r["wall_s"], r["speedup_vs_first"]] for r in data.get("grid", [])]
    return [f"{data.get('epochs')} epochs, {data.get('cpus')} CPUs; grid `{data.get('grid_flags', '')}`", ""] + \
        table(["config", "runs trained", "wall (s)", "speed-up vs first"], rows)


#: What a device call brings back from $OUT: at most 8 files, 16 MiB each, 64 MiB in all, two folders
#: down at most, each name of letters, digits, '.', '_' and '-' (the device tool's limits).
RETURN_FILES, RETURN_FILE_BYTES, RETURN_TOTAL_BYTES = 8, 16 * 2**20, 64 * 2**20
PLAIN_NAME = re.compile(r"^[A-Za-z0-9._-]+$")


def returned_problems(root: Path) -> list[str]:
    """Why what `root` holds ($OUT) would not all come back from a device call, and per-sample scores
    that are not gzipped (a CIFAR-10 score table is ~13 MB as text); [] when all is well."""
    entries = sorted(root.rglob("*"))
    files = [p for p in entries if p.is_file() and not p.is_symlink()]
    problems = [f"{p.relative_to(root)}: not a plain file" for p in entries
                if p.is_symlink() or not (p.is_file() or p.is_dir())]
    problems += [f"{p.relative_to(root)}: name not of letters, digits, '.', '_' and '-'" for p in entries
                 if not all(PLAIN_NAME.match(part) for part in p.relative_to(root).parts)]
    problems += [f"{p.relative_to(root)}: more than two folders down" for p in files
                 if len(p.relative_to(root).parts) > 3]
    problems += [f"{p.relative_to(root)}: {p.stat().st_size / 2**20:.1f} MiB, over 16" for p in files
                 if p.stat().st_size > RETURN_FILE_BYTES]
    if len(files) > RETURN_FILES:
        problems.append(f"{len(files)} files, over {RETURN_FILES}")
    if sum(p.stat().st_size for p in files) > RETURN_TOTAL_BYTES:
        problems.append("over 64 MiB in all")
    problems += [f"{name}: per-sample scores not gzipped" for name in Files(root).names("full/*/scores/*")
                 if not name.endswith(".gz")]
    return problems


def returned(files: Files) -> list[str]:
    rows = [[str(p.relative_to(files.root)), p.stat().st_size / 2**20] for p in sorted(files.root.rglob("*"))
            if p.is_file()]
    problems = returned_problems(files.root)
    return table(["file", "MiB"], rows) + [""] + ([f"**Would not come back:** {'; '.join(problems)}"]
                                              if problems else ["All of it comes back from a device call."])


SECTIONS: list[tuple[str, Callable[[Files], list[str]]]] = [
    ("Stages", stages), ("CUDA correctness tests", cuda_tests), ("Training loop benchmarks", benchmarks),
    ("Recording cost on the digits MLP (held batches)", recording),
    ("Conv-net stability ensembles (K models/hour)", conv_ensemble), ("Full CIFAR-10, gpu preset", full_cifar),
    ("--gpus-per-run 0.25 vs one at a time (local executor)", gpu_packing), ("Returned files ($OUT)", returned),
]


def summarize(root: Path) -> str:
    files = Files(root)
    lines = [f"### GPU session (run_gpu_session.sh), {time.strftime('%Y-%m-%d')}", "", *machine(files), ""]
    for title, section in SECTIONS:
        try:
            body = section(files)
        except Exception as e:  # noqa: BLE001 - a summary must come back whatever one file holds
            body = [f"unreadable: {type(e).__name__}: {e}"]
        lines += [f"#### {title}", "", *body, ""]
    return "\n".join(lines)


def main() -> None:
    args = [a for a in sys.argv[1:] if a != "--check"]
    if len(args) not in (1, 2) or args[0] in ("-h", "--help"):
        raise SystemExit(__doc__)
    if not Path(args[0]).is_dir():
        raise SystemExit(f"error: {args[0]} is not a folder; pass the session's results folder\n\n{__doc__}")
    text = summarize(Path(args[0]))
    if len(args) == 2:
        Path(args[1]).write_text(text)
    else:
        print(text)
    if "--check" in sys.argv and (problems := returned_problems(Path(args[0]))):
        raise SystemExit("error: a device call would not bring all of this back: " + "; ".join(problems))


if __name__ == "__main__":
    main()
