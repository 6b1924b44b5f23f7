"""MkDocs hooks of the memprox site (`hooks:` in mkdocs.yml; excluded from the site itself).

- Tables generated from the registries at build time, so the site cannot drift from the code: a
  page line `<!-- registry:proxies -->` (or `tasks`, `executors`, `datasets`) becomes a Markdown
  table of what that registry holds (name, description, parameters, citation for proxies). On
  GitHub the comment stays invisible and the page says where the list comes from.
- The figures under `results/*/figures/*.png` are added to the site as generated files under
  `gallery/`, so pages can show them without copies in git: a page links them as
  `../results/<folder>/figures/<name>.png` (which works on GitHub too) and the link is pointed
  at the generated copy here.
- A nav entry whose page does not exist (a page another change is still writing) is dropped with
  an info line instead of failing `--strict`.
"""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the registries, when memprox is not installed
    sys.path.insert(0, str(ROOT))

log = logging.getLogger("mkdocs.plugins.memprox")

GALLERY = "gallery"
FIGURES = "results/*/figures/*.png"
_MARKER = re.compile(r"^<!-- registry:(\w+) -->[ \t]*$", re.M)
_FIGURE_LINK = re.compile(r"\]\((?:\.\./)+results/([^)\s]+\.png)\)")


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _params(defaults: dict[str, Any]) -> str:
    return ", ".join(f"`{k}={v!r}`" for k, v in defaults.items()) or "–"


def proxy_table() -> str:
    """Every built-in proxy (installed plugins are left out): name, what it computes, its
    parameters with defaults, the variants `--proxies all` adds, and its citation."""
    import proxies  # noqa: F401  (imports every module in proxies/, which registers it)
    from proxies.registry import PROXIES

    rows = ["| proxy | what it computes | parameters | also in `all` | citation |", "|---|---|---|---|---|"]
    for name, cls in sorted(PROXIES.items()):
        if not cls.__module__.startswith("proxies."):
            continue
        variants = ", ".join(f"`{name}({', '.join(f'{k}={v!r}' for k, v in v.items())})`"
                             for v in getattr(cls, "variants_in_all", ())) or "–"
        rows.append(f"| `{name}` | {_cell(cls.description)} | {_params(dict(cls.defaults))} | {variants} | "
                    f"{_cell(cls.citation)} |")
    return "\n".join(rows)


def task_table() -> str:
    from harness.tasks import TASKS

    rows = ["| task | what it measures | parameters (`--task-arg TASK.PARAM=VALUE`) |", "|---|---|---|"]
    for name, cls in sorted(TASKS.items()):
        rows.append(f"| `{name}` | {_cell(cls.description)} | {_params(dict(cls.defaults))} |")
    return "\n".join(rows)


def executor_table() -> str:
    from harness.executors import BUILTIN, EXECUTORS, executor_class

    rows = ["| `--executor` | what it is | its own options |", "|---|---|---|"]
    for name in sorted(BUILTIN):
        cls = executor_class(name)  # imports the built-in's module (Ray itself is imported lazily)
        options = ", ".join(f"`--{o.replace('_', '-')}`" for o in cls.options) or "–"
        rows.append(f"| `{name}` | {_cell(cls.description)} | {options} |")
    assert set(BUILTIN) <= set(EXECUTORS)
    return "\n".join(rows)


def dataset_table() -> str:
    from harness.datasets import DATASETS

    rows = ["| `--dataset` | what it is |", "|---|---|"]
    for name, entry in DATASETS.items():
        rows.append(f"| `{name}:PATH` |" if entry.takes_path else f"| `{name}` |")
        rows[-1] += f" {_cell(entry.description)} |"
    return "\n".join(rows)


TABLES = {"proxies": proxy_table, "tasks": task_table, "executors": executor_table, "datasets": dataset_table}


def render_markers(markdown: str, where: str = "page") -> str:
    """Replace every `<!-- registry:NAME -->` line with its generated table."""

    def table(match: re.Match) -> str:
        kind = match.group(1)
        if kind not in TABLES:
            raise ValueError(f"{where}: unknown generated table {kind!r}; known: {', '.join(TABLES)}")
        return TABLES[kind]()

    return _MARKER.sub(table, markdown)


def figures() -> list[Path]:
    """The committed result figures: not those of `results/latest`, the CLI's default --out (git
    ignores it), which a user's own run fills."""
    return sorted(p for p in ROOT.glob(FIGURES) if p.parts[-3] != "latest")


# -- MkDocs events ----------------------------------------------------------------------------


def on_config(config: Any) -> Any:
    docs = Path(config["docs_dir"])

    def keep(item: Any) -> Any:
        if isinstance(item, str):
            return item if item.startswith(("http://", "https://")) or (docs / item).exists() else None
        if isinstance(item, dict):
            out = {}
            for title, value in item.items():
                kept = keep(value)
                if kept is None or kept == []:
                    log.info("nav: %r left out, its page does not exist yet", title)
                    continue
                out[title] = kept
            return out or None
        if isinstance(item, list):
            return [k for k in (keep(i) for i in item) if k is not None]
        return item

    if config.get("nav"):
        config["nav"] = keep(config["nav"])
    return config


def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File

    for png in figures():
        uri = f"{GALLERY}/{png.relative_to(ROOT / 'results').as_posix()}"
        files.append(File.generated(config, uri, abs_src_path=str(png)))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    markdown = render_markers(markdown, page.file.src_uri)
    depth = page.file.src_uri.count("/")
    prefix = "../" * depth + GALLERY + "/"
    return _FIGURE_LINK.sub(lambda m: f"]({prefix}{m.group(1)})", markdown)
