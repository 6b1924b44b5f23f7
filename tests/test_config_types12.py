"""`ExperimentConfig` is generated from the option table at run time, so type checkers read the fields
declared in `ConfigChecks`' `if TYPE_CHECKING:` block instead. These tests keep that block and the
table in step: a new option, a renamed one or a changed annotation fails here, not silently in mypy.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect

from harness import config, options


def _declared_fields() -> dict[str, str]:
    tree = ast.parse(inspect.getsource(config.ConfigChecks))
    (cls,) = [node for node in tree.body if isinstance(node, ast.ClassDef)]
    blocks = [node for node in cls.body if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"]
    assert len(blocks) == 1, "ConfigChecks declares its fields in one `if TYPE_CHECKING:` block"
    return {node.target.id: ast.unparse(node.annotation) for node in blocks[0].body
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)}


def test_declared_fields_are_the_option_tables() -> None:
    table = {o.name: o.annotation for o in options.table() if o.field}
    assert _declared_fields() == table


def test_declared_fields_are_the_generated_class_fields_in_order() -> None:
    generated = [f.name for f in dataclasses.fields(config.config_class())]
    assert list(_declared_fields()) == generated


def test_the_declaration_leaves_the_runtime_class_alone() -> None:
    """The block is not executed: the generated dataclass is what `ExperimentConfig` is."""
    assert dataclasses.is_dataclass(config.ExperimentConfig)
    assert config.ExperimentConfig is config.config_class()
    assert not hasattr(config.ConfigChecks, "__annotations__") or not config.ConfigChecks.__annotations__
