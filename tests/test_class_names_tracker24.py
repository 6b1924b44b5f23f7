"""`SampleTracker.suspects(classes=...)` names each class id as the CLI's suspects CSV does
(`label_name`, `predicted_name`, `suggested_name`, each beside its id, in the CSV's column order),
through `plot_suspects` and the Lightning and Hugging Face callbacks too; bad `classes` (a string,
the wrong number of names, repeated names, names that are not text) are refused with the fix."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from harness.errors import HarnessError
from harness.tasks import make_tasks
from harness.tasks.suspects import Suspects
from harness.tracker import SampleTracker

NAMES = ["cat", "dog", "emu"]
#: three samples, one epoch: sample 1 is labelled emu (2) and predicted dog (1); the others are right
LOGITS = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 2.0]])
LABELS = torch.tensor([0, 2, 2])
#: every column the tracker's table has with `classes`, in order
COLUMNS = ["index", "label", "label_name", "predicted", "predicted_name", "suggested", "suggested_name",
           "p_suggested", "score"]


def _tracker() -> SampleTracker:
    tracker = SampleTracker(3)
    tracker.update([0, 1, 2], logits=LOGITS, labels=LABELS)
    tracker.end_epoch()
    return tracker


def _check_named(table: pd.DataFrame) -> None:
    """The hand-made case's table: csl ranks sample 1 (loss of emu under logits favouring dog) first;
    the tie of samples 0 and 2 (the same loss) goes to the lower index."""
    assert list(table.columns) == COLUMNS
    assert table["index"].tolist() == [1, 0, 2]
    assert table["label"].tolist() == [2, 0, 2]
    assert table["label_name"].tolist() == ["emu", "cat", "emu"]
    assert table["predicted"].tolist() == [1, 0, 2]
    assert table["predicted_name"].tolist() == ["dog", "cat", "emu"]
    # of the classes other than the given one, the highest softmax: sample 0 (cat) -> dog (logit 1 > 0)
    assert table["suggested"].tolist() == [1, 1, 0]
    assert table["suggested_name"].tolist() == ["dog", "dog", "cat"]


def test_suspects_names_each_class_beside_its_id() -> None:
    tracker = _tracker()
    _check_named(tracker.suspects(3, classes=NAMES))
    _check_named(tracker.suspects(3, classes=np.array(NAMES)))  # a NumPy array of names, as plain str
    assert type(tracker.suspects(3, classes=np.array(NAMES))["label_name"].iloc[0]) is str
    plain = tracker.suspects(3)  # no names: the ids alone, suggested_name as the id's text
    assert list(plain.columns) == ["index", "label", "predicted", "suggested", "suggested_name", "p_suggested",
                                   "score"]
    assert plain["suggested_name"].tolist() == ["1", "1", "0"]


def test_the_columns_follow_the_cli_suspects_csv_order() -> None:
    """Every column both tables have comes in the same order (the CLI's adds p_label and its proxies)."""
    task = make_tasks(["suspects"])[0]
    assert isinstance(task, Suspects)
    dataset = SimpleNamespace(sample_names=None, classes=NAMES, is_tokens=False)
    ctx: Any = SimpleNamespace(data=SimpleNamespace(n=3, labels=LABELS.numpy(), dataset=dataset))
    probs = torch.softmax(LOGITS, 1).numpy()
    cli = Suspects.table(ctx, {"csl": np.array([0.4, 2.2, 0.4])}, np.array([0, 1, 2]), np.array([0.6, 0.1, 0.6]),
                         None, probs)
    mine = _tracker().suspects(3, classes=NAMES)
    both = set(cli.columns) & set(mine.columns)
    assert both == set(COLUMNS) - {"score"}
    assert [c for c in mine.columns if c in both] == [c for c in cli.columns if c in both]
    # and the same names for the same samples
    cli = cli.set_index("index").loc[mine["index"]]
    for column in ("label_name", "predicted_name", "suggested_name"):
        assert mine[column].tolist() == cli[column].tolist(), column


def test_a_sample_never_seen_has_no_names() -> None:
    """Sample 3 was never presented: its label and prediction are <NA>, and so are their names."""
    tracker = SampleTracker(4, proxies=["csl"])
    tracker.update([0, 1, 2], logits=LOGITS, labels=LABELS)
    tracker.end_epoch()
    with pytest.warns(RuntimeWarning, match="never presented"):
        table = tracker.suspects(4, classes=NAMES).set_index("index")
    assert str(table["label"].dtype) == "Int64"  # ids stay ids: 2, not 2.0, beside a <NA>
    assert pd.isna(table.loc[3, "label"]) and pd.isna(table.loc[3, "label_name"])
    assert pd.isna(table.loc[3, "predicted"]) and pd.isna(table.loc[3, "predicted_name"])
    assert table.loc[1, "label_name"] == "emu" and table.loc[1, "predicted_name"] == "dog"


BAD = [
    ("cat dog emu", r"suspects\(classes=\.\.\.\) must be a list of class names, got str"),
    (["cat", "dog"], r"names 2 class\(es\) but the table needs class ids 0\.\.2; pass one name \(a str\) per class"),
    (["cat", "dog", "emu", "fox"], r"names 4 classes but the model's logits have 3; pass one name \(a str\) per"),
    (["cat", "dog", "cat"], r"names two classes 'cat' \(positions 0 and 2\); give every class a distinct name"),
    ([0, 1, 2], r"holds 0 \(int\) at position 0, not a class name; pass one name \(a str\) per class"),
    (["cat", b"dog", "emu"], r"holds b'dog' \(bytes\) at position 1"),
    ({"cat": 0, "dog": 1, "emu": 2}, r"must be a list of class names, got dict"),
]


@pytest.mark.parametrize(("classes", "message"), BAD)
def test_bad_classes_are_refused_with_the_fix(classes: Any, message: str, tmp_path: Path) -> None:
    tracker = _tracker()
    with pytest.raises(HarnessError, match=message):
        tracker.suspects(3, classes=classes)
    with pytest.raises(HarnessError, match=message.replace("the table needs", "the captions need")
                       .replace(r"suspects\(", r"plot_suspects\(")):
        tracker.plot_suspects(np.zeros((3, 4, 4)), 3, classes=classes, path=tmp_path / "s.png")
    assert not (tmp_path / "s.png").exists()
    _check_named(tracker.suspects(3, classes=NAMES))  # still usable


def test_a_losses_only_tracker_takes_names_for_classes_beyond_its_labels() -> None:
    """Without logits the number of classes is unknown: more names than the labels use are fine."""
    tracker = SampleTracker(3)
    tracker.update([0, 1, 2], losses=torch.tensor([0.1, 0.9, 0.2]), labels=LABELS)
    tracker.end_epoch()
    with pytest.warns(UserWarning, match="no suggested label"):
        table = tracker.suspects(3, classes=NAMES + ["fox"])
    assert table["label_name"].tolist() == ["emu", "emu", "cat"]
    assert table["predicted_name"].isna().all()  # no logits: no prediction
    with pytest.raises(HarnessError, match=r"names 2 class\(es\) but the table needs class ids 0\.\.2"):
        tracker.suspects(3, classes=NAMES[:2])


def test_plot_suspects_draws_with_the_names(tmp_path: Path) -> None:
    path = _tracker().plot_suspects(np.zeros((3, 4, 4)), 3, classes=NAMES, path=tmp_path / "s.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
    # names from a generator: read once, for the check and the captions alike
    path = _tracker().plot_suspects(np.zeros((3, 4, 4)), 3, classes=(n for n in NAMES), path=tmp_path / "g.png")
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_the_lightning_callback_names_the_classes_and_refuses_bad_ones_at_once() -> None:
    pytest.importorskip("lightning")
    from harness.integrations.lightning import CSLCallback

    with pytest.raises(HarnessError, match=r"CSLCallback\(classes=\.\.\.\) names two classes 'cat'"):
        CSLCallback(3, classes=["cat", "cat", "emu"])
    csl = CSLCallback(3, classes=NAMES)
    losses = torch.nn.functional.cross_entropy(LOGITS, LABELS, reduction="none")
    outputs = {"loss": losses.mean(), "losses": losses, "indices": torch.arange(3), "logits": LOGITS,
               "labels": LABELS}
    csl.on_train_batch_end(None, None, outputs, None, 0)
    csl.on_train_epoch_end(None, None)
    _check_named(csl.suspects(3, classes=csl.classes))
    assert csl.classes == NAMES


def test_the_lightning_callback_draws_with_its_classes_at_train_end(tmp_path: Path) -> None:
    pytest.importorskip("lightning")
    from harness.integrations.lightning import CSLCallback

    csl = CSLCallback(3, classes=np.array(NAMES), images=np.zeros((3, 4, 4)), plot_path=tmp_path / "s.png", k=3)
    assert csl.classes == NAMES and type(csl.classes[0]) is str  # checked, as plain str
    csl._recorder.update(torch.arange(3), logits=LOGITS, labels=LABELS)
    csl.on_train_epoch_end(None, None)
    csl.on_train_end(SimpleNamespace(is_global_zero=True), None)
    assert csl.figure is not None and csl.figure.read_bytes()[:4] == b"\x89PNG"


def test_the_hugging_face_callback_names_the_classes() -> None:
    pytest.importorskip("transformers")
    from harness.integrations.transformers import CSLTrainerCallback

    csl = CSLTrainerCallback(3)
    csl._recorder.update(torch.arange(3), logits=LOGITS, labels=LABELS)  # as CSLTrainer's batch does
    with pytest.raises(HarnessError, match=r"suspects\(classes=\.\.\.\) names two classes"):
        csl.suspects(3, classes=["cat", "cat", "emu"])
    _check_named(csl.suspects(3, classes=NAMES))  # the open epoch was closed
