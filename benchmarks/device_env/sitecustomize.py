"""Imports as the device machine has them, for a CPU rehearsal of run_gpu_session.sh
(benchmarks/rehearse_gpu_session.sh puts this folder on PYTHONPATH).

The device's bare python3 has torch, the scientific stack, pytest and pytest-benchmark, but not
memprox (its scripts run from the repository root) nor the packages in MISSING, which a development
environment installs with the dev extra. Here those imports fail as they would there, and memprox is
found only where the device finds it, on sys.path, never through an editable install: a script that
needs either then fails the rehearsal, not the device call. A test module that imports cleanlab at
its top fails pytest's collection, and with it a whole stage of CUDA tests.
"""

from __future__ import annotations

import importlib.abc
import sys
from collections.abc import Sequence
from types import ModuleType

#: Top-level modules of the packages the development environment has and the device image lacks
#: (benchmarks/device_env's list, read from both package lists in December 2026).
MISSING = frozenset({
    "_multiprocess", "alembic", "annotated_types", "ast_serialize", "babel", "backrefs", "cleanlab", "colorlog",
    "dask", "datasets", "dill", "distributed", "ghp_import", "griffe", "httpcore2", "httpx2", "importlib_metadata",
    "jsonschema", "jsonschema_specifications", "kernels", "lazy_importer", "librt", "locket", "mako", "material",
    "materialx", "mergedeep", "mkdocs", "mkdocs_autorefs", "mkdocs_get_deps", "mkdocstrings",
    "mkdocstrings_handlers", "multiprocess", "mypy", "mypyc", "optuna", "paginate", "partd", "platformdirs",
    "pydantic", "pydantic_core", "pymdownx", "ray", "referencing", "rpds", "ruff", "sqlalchemy", "submitit",
    "tblib", "termcolor", "tomlkit", "tornado", "truststore", "typing_inspection", "watchdog", "yaml_env_tag",
    "zict",
})


class DeviceImports(importlib.abc.MetaPathFinder):
    """Refuses the modules the device lacks, as a missing package would: ModuleNotFoundError."""

    def find_spec(self, name: str, path: Sequence[str] | None = None, target: ModuleType | None = None) -> None:
        if name.partition(".")[0] in MISSING:
            raise ModuleNotFoundError(f"No module named {name!r} (the device machine has no such package)",
                                      name=name)
        return None


def _not_editable(hook: object) -> bool:
    return "__editable__" not in (getattr(hook, "__module__", None) or type(hook).__module__)


sys.meta_path[:] = [DeviceImports(), *filter(_not_editable, sys.meta_path)]
sys.path_hooks[:] = list(filter(_not_editable, sys.path_hooks))
sys.path_importer_cache.clear()
