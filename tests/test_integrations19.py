"""Integrations 19, run for real. Each test failed before its fix: without transformers, importing
the Hugging Face integration no longer named the extra to install."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# --- 1. the install message --------------------------------------------------------------------------

def test_without_transformers_the_import_says_what_to_install() -> None:
    """The accumulation check's module (imported first) imports transformers itself, before the
    integration's guard: without transformers, `import harness.integrations.transformers` said only
    "No module named 'transformers'", not the extra to install."""
    pytest.importorskip("transformers")
    code = ("import sys\nsys.modules['transformers'] = None\n"
            "try:\n    import harness.integrations.transformers\nexcept ImportError as e:\n    print(e)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).parent.parent)
    assert done.stdout.strip() == "harness.integrations.transformers needs transformers: pip install 'memprox[hf]'"
