"""tools/fold_splits.py: run splits that cut a split file's training cases into parts, for cross-fitting."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[2] / "tools"
sys.path.insert(0, str(TOOLS))
import fold_splits  # noqa: E402

SPLIT = {"train": [f"c{i:02d}" for i in range(11)], "val": ["v0", "v1"], "test": ["t0"]}


@pytest.mark.parametrize("folds", [2, 3, 11])
def test_every_training_case_is_in_exactly_one_fold_and_held_out_of_the_others(folds):
    splits = fold_splits.fold_splits(SPLIT, folds, seed=0)
    assert len(splits) == folds
    assert sorted(c for s in splits for c in s["train"]) == SPLIT["train"]
    for s in splits:
        assert sorted(s["train"] + s["heldout_train"]) == SPLIT["train"]
        assert not set(s["train"]) & set(s["heldout_train"])
        assert (s["val"], s["test"]) == (SPLIT["val"], SPLIT["test"])
    sizes = [len(s["train"]) for s in splits]
    assert max(sizes) - min(sizes) <= 1


def test_the_parts_depend_on_the_seed_only():
    shuffled = {**SPLIT, "train": list(reversed(SPLIT["train"]))}
    assert fold_splits.fold_splits(shuffled, 2, seed=0) == fold_splits.fold_splits(SPLIT, 2, seed=0)
    assert fold_splits.fold_splits(SPLIT, 2, seed=1) != fold_splits.fold_splits(SPLIT, 2, seed=0)


def test_a_bad_fold_count_is_refused():
    for folds in (1, 12):
        with pytest.raises(ValueError, match="--folds"):
            fold_splits.fold_splits(SPLIT, folds, seed=0)


def test_the_command_writes_one_run_split_each_and_keeps_an_existing_one(tmp_path):
    split_file = tmp_path / "split.json"
    split_file.write_text(json.dumps(SPLIT))
    (tmp_path / "run-b").mkdir()
    (tmp_path / "run-b" / "split.json").write_text("kept")
    command = [sys.executable, str(TOOLS / "fold_splits.py"), str(split_file), str(tmp_path / "run")]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    assert "run-b/split.json: exists" in result.stdout
    assert json.loads((tmp_path / "run-a" / "split.json").read_text()) == fold_splits.fold_splits(SPLIT, 2, 0)[0]
    assert (tmp_path / "run-b" / "split.json").read_text() == "kept"
    assert not list(tmp_path.glob("run-*/*.tmp"))
