"""`imagefolder:PATH,exclude=FILE`: images of the folder that are not samples, listed in a file.

Why: memprox changes no file of yours, and a folder may not be yours to change (a read-only mount,
a team's copy). Training without the suspects you confirmed, or without a subfolder (`cat/rejected/`,
a class folder's subfolders are samples too), took a copy of the whole folder. A folder named with a
leading `.` is skipped, but renaming is a change of the folder, and a `rejected/` moved beside the
class folders became a class.

FILE itself, when relative, is relative to the current folder (as every path memprox is given), not to
PATH. The file holds one path or pattern per line, relative to PATH with `/` between names, as the suspects
CSVs' `file` column writes them (`train/cat/00042.jpg`). A line names an image, or a folder whose
images are all excluded; `*`, `?` and `[...]` are `fnmatch` patterns over the whole relative path (`*`
matches `/` too); names compare in Unicode's NFC form, so a line typed on any system matches a name a Mac
wrote decomposed (NFD). A line that names an existing file or folder is that name, never a pattern:
`train/cat/img[1].jpg`, copied from the `file` column, also matched `train/cat/img1.jpg` and silently left
that image out too. `a//b` and `a/./b` are `a/b`, as to the file system. A line that matches no image is an
error: a typo (or a file since renamed) would otherwise silently train on the image it meant to drop. The
excluded images are not read, so the folder's fingerprint is that of the folder without them: the same
stored runs as a copy with those files deleted.
"""

from __future__ import annotations

import fnmatch
import os
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from harness.errors import HarnessError
from harness.values import EXCLUDE_OPTION, expand_home

_MAGIC = re.compile(r"[*?[]")  # what makes fnmatch read a line as a pattern


def split_exclude(name: str, rest: str) -> tuple[str, Path | None]:
    """`PATH[,exclude=FILE]` -> (PATH, FILE). The option is found by its last `,exclude=`, so a
    folder whose name holds commas still loads without it."""
    path, sep, value = rest.rpartition(EXCLUDE_OPTION)
    if not sep:
        return rest, None
    if not value:
        raise HarnessError(f"{name}: exclude= needs a file: imagefolder:PATH,exclude=FILE, FILE listing one image "
                           "or folder (relative to PATH) per line")
    if not path:
        raise HarnessError(f"{name}: imagefolder needs a path before ,exclude=: imagefolder:PATH,exclude=FILE")
    return path, expand_home(value, f"--dataset {name} (exclude=)")


@dataclass
class Exclusions:
    """The lines of an exclude file, and which of them matched an image (see the module docstring)."""

    source: Path
    lines: list[str]
    used: set[str] = field(default_factory=set)
    #: lines matched as names (no `*`, `?`, `[`, or naming an existing path: `anchor`), looked up in a set:
    #: 2,000 confirmed suspects, each matched as a pattern against CIFAR-10's 50,000 images, took 5 minutes
    #: in every process that loads the data
    exact: set[str] = field(default_factory=set)
    patterns: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.exact = {line for line in self.lines if not _MAGIC.search(line)}
        self.patterns = [line for line in self.lines if line not in self.exact]

    def anchor(self, root: Path) -> None:
        """Take the lines that name an existing path under `root` literally, even when they hold `[`, `?` or
        `*`: a file named `img[1].jpg` is common, and as a pattern its line also left out `img1.jpg`. Both
        Unicode forms are tried, as the lines are NFC and a folder copied from a Mac is NFD."""
        named = {line for line in self.patterns
                 if any(os.path.lexists(root / unicodedata.normalize(form, line)) for form in ("NFC", "NFD"))}
        self.exact |= named
        self.patterns = [line for line in self.patterns if line not in named]

    def excludes(self, relative: str) -> bool:
        """Whether the image at `relative` (POSIX, relative to PATH) is excluded: a line equal to it,
        to one of its folders, or matching either as a pattern."""
        relative = unicodedata.normalize("NFC", relative)  # a folder copied from macOS: é as e + U+0301
        names = [relative, *(p.as_posix() for p in PurePosixPath(relative).parents if p.as_posix() != ".")]
        hits = {n for n in names if n in self.exact}
        hits.update(line for line in self.patterns if any(fnmatch.fnmatchcase(n, line) for n in names))
        self.used |= hits
        return bool(hits)

    def check_used(self, name: str, root: Path) -> None:
        """A line that excluded nothing is an error naming it (a typo would keep the image it meant)."""
        unused = [line for line in self.lines if line not in self.used]
        if unused:
            more = f" and {len(unused) - 5} more" if len(unused) > 5 else ""
            raise HarnessError(
                f"{name}: {len(unused)} line(s) of {self.source} match no image of {root} ({unused[:5]}{more}); each "
                f"line is an image or a folder relative to {root}, as the suspects CSVs' `file` column writes it "
                f"(e.g. train/cat/00042.jpg): fix those lines, or remove them if the images are gone"
            )


def read_exclusions(name: str, source: Path, root: Path) -> Exclusions:
    """The exclude file's lines (blank lines and `#` comments skipped), each checked to be a relative
    path within the folder `root`: an absolute path or a `..` could never match, and the error says why.
    A relative `source` is relative to the current folder, as every path memprox reads (not to `root`)."""
    try:
        text = source.read_text(encoding="utf-8-sig")  # Notepad's byte-order mark is not part of a name
    except FileNotFoundError:
        inside = root / source
        hint = (f" (a relative FILE is relative to the current folder {Path.cwd()}, not to the dataset folder: "
                f"pass exclude={inside})") if not source.is_absolute() and inside.is_file() else ""
        where = "" if source.is_absolute() else f" ({Path.cwd() / source})"
        raise HarnessError(f"{name}: exclude file {source}{where} does not exist{hint}; pass exclude=FILE, a text file "
                           "listing one image or folder (relative to the dataset folder) per line") from None
    except IsADirectoryError:
        raise HarnessError(f"{name}: exclude={source} is a folder; pass a text file listing one image or folder "
                           "(relative to the dataset folder) per line") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise HarnessError(f"{name}: cannot read exclude file {source}: {exc}; pass a UTF-8 text file") from None
    lines: list[str] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = unicodedata.normalize("NFC", line.rstrip("/"))
        if line and not line.startswith("/"):  # `./a`, `a//b`, `a/./b` are `a/b`, as to the file system
            line = PurePosixPath(line).as_posix()
        if line.startswith("/") or ".." in PurePosixPath(line).parts or line in ("", "."):
            raise HarnessError(f"{name}: line {number} of {source} ({raw.strip()!r}) is not a path relative to the "
                               f"dataset folder; write it as the suspects CSVs' `file` column does "
                               f"(e.g. train/cat/00042.jpg)")
        if line not in lines:
            lines.append(line)
    exclusions = Exclusions(source, lines)
    exclusions.anchor(root)
    return exclusions
