"""ee4d162 made a name after a flag Python (`device='cpu'`), but not for every flag that takes a name:
`run_experiment(tasks="privacy", reference=...)` was told "privacy needs reference stability", and a
dataset name read as the sentence going on ("pass dataset digits")."""

from __future__ import annotations

import pytest

from harness.api_wording import as_keywords


@pytest.mark.parametrize("message, expected", [
    ("privacy needs --reference stability (its K models are the attack's shadow models)",
     "privacy needs reference='stability' (its K models are the attack's shadow models)"),
    ("pass --dataset digits or --dataset mnist", "pass dataset='digits' or dataset='mnist'"),
    # the sentence going on stays a sentence
    ("pass the --dataset it was made for", "pass the dataset it was made for"),
    ("--reference was given twice", "reference was given twice"),
])
def test_a_reference_or_dataset_name_after_its_flag_is_python(message: str, expected: str) -> None:
    assert as_keywords(message) == expected
