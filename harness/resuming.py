"""The line that says a run, or a batched ensemble's chunk, resumed from its checkpoint(s):
`resuming <what> from its checkpoint(s) at epoch E of N`, printed on stderr by the worker that trains it.

Its own module, importing nothing, because the line has a reader besides the user: the Ray driver
(`harness.executors.ray_jobs`) keeps the lines of a job's stderr that `is_resuming` accepts and says them
on its own stderr (memprox joins Ray with `log_to_driver=False`). It once matched its own copy of the
line's start, so a reworded line would have stayed in a Ray worker's log with no test failing; now both
writers (`harness.jobs.resume_line`, `harness.ensemble_checkpoint.chunk_resume_line`) and that reader
take the wording from here."""

#: How every resuming line begins: what the Ray driver matches (`is_resuming`).
RESUMING = "resuming "


def resuming_line(what: str, epoch: int, epochs: int, *, members: bool = False) -> str:
    """The line for `what` (a run's label, or an ensemble chunk's) resumed at `epoch` of `epochs`;
    `members`: from its members' checkpoints, one file each, rather than from one checkpoint."""
    files = "checkpoints" if members else "checkpoint"
    return f"{RESUMING}{what} from its {files} at epoch {epoch} of {epochs}"


def is_resuming(line: str) -> bool:
    """Whether a line a job printed says that a run resumed (`resuming_line`'s lines, and only those)."""
    return line.startswith(RESUMING)
