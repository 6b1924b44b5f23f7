"""attdig30: of two classes of one name without methods, the one digested is found by the literal values it holds
(`code_source._which`), compared by repr: a set's repr follows the string hash seed, so under seed 7 the second
`Net` (`S = {"x", "y", 5}`) was not found, the first's text was read, and a fresh process's digest differed."""

from __future__ import annotations

import os
import subprocess
import sys

SOURCE = 'class Net:\n    S = {"x", "y", 3}\nKEEP = Net\nclass Net:\n    S = {"x", "y", 5}\n'


def test_the_second_of_two_same_name_classes_has_one_digest_under_every_hash_seed(tmp_path) -> None:
    (tmp_path / "attdig30_twice.py").write_text(SOURCE, encoding="utf-8")
    script = ("import attdig30_twice\nfrom harness.code_digest import code_digest\n"
              "print(code_digest(attdig30_twice.Net))")
    digests = []
    for seed in ("1", "7"):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path]), "PYTHONHASHSEED": seed,
               "PYTHONDONTWRITEBYTECODE": "1"}
        digests.append(subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                                      check=True).stdout.strip())
    assert digests == ["d54828161536147f"] * 2  # d7dc031: 22b6f2f1b081a10f under seed 7 (the first Net's text)
