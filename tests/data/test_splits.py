"""Cross-validation folds: nnU-Net's convention, file round trip, fold selection, bad files."""

from __future__ import annotations

import json

import pytest

from masam.data.dataset import DatasetError
from masam.data.splits import fold_cases, make_folds, read_splits, write_splits

# Validation indices printed by scikit-learn 1.9.1:
#   KFold(n_splits, shuffle=True, random_state=12345).split(names)
# (nnU-Net's generate_crossval_split over sorted names). An independent reference: our code has no sklearn.
SKLEARN_VAL = {
    (12, 5): [[0, 3, 8], [7, 10, 11], [6, 9], [1, 4], [2, 5]],
    (7, 2): [[0, 3, 4, 6], [1, 2, 5]],
    (16, 5): [[0, 7, 8, 11], [3, 6, 12], [10, 14, 15], [1, 4, 9], [2, 5, 13]],
    (23, 5): [[3, 8, 10, 17, 19], [0, 7, 12, 15, 16], [6, 11, 14, 18, 20], [9, 13, 21, 22], [1, 2, 4, 5]],
}


@pytest.mark.parametrize("n, k", sorted(SKLEARN_VAL))
def test_folds_equal_nnunet_kfold(n, k):
    names = [f"c{i:03d}" for i in range(n)]
    shuffled = names[::-1]  # the input order must not matter: nnU-Net sorts first
    splits = make_folds(shuffled, k)
    assert [[names.index(v) for v in f["val"]] for f in splits] == SKLEARN_VAL[(n, k)]
    for fold in splits:
        assert fold["train"] == [x for x in names if x not in fold["val"]]


def test_every_case_validates_exactly_once_and_seed_changes_folds():
    names = [f"case{i}" for i in range(11)]
    splits = make_folds(names, 5, seed=3)
    vals = [v for f in splits for v in f["val"]]
    assert sorted(vals) == sorted(names) and len(vals) == len(set(vals))
    assert make_folds(names, 5, seed=3) == splits
    assert make_folds(names, 5, seed=4) != splits


def test_write_read_round_trip_is_nnunet_format(tmp_path):
    splits = make_folds([f"c{i}" for i in range(6)], 3)
    path = write_splits(tmp_path / "splits_final.json", splits)
    raw = json.loads(path.read_text())
    assert isinstance(raw, list) and set(raw[0]) == {"train", "val"}
    assert read_splits(path) == splits
    assert [p.name for p in tmp_path.iterdir()] == ["splits_final.json"]  # no temporary left


def test_fold_cases_index_and_all():
    splits = make_folds([f"c{i}" for i in range(5)], 5)
    train, val = fold_cases(splits, 2)
    assert val == splits[2]["val"] and train == splits[2]["train"]
    train, val = fold_cases(splits, "all")
    assert train == [f"c{i}" for i in range(5)] and val == []
    assert fold_cases(splits, "3") == fold_cases(splits, 3)


def test_bad_folds_and_files(tmp_path):
    splits = make_folds([f"c{i}" for i in range(4)], 2)
    with pytest.raises(ValueError, match="fold 2 does not exist"):
        fold_cases(splits, 2)
    with pytest.raises(ValueError, match="integer or 'all'"):
        fold_cases(splits, "best")
    with pytest.raises(DatasetError, match="lacks"):
        fold_cases(splits, 0, known=["c0", "c1"])
    with pytest.raises(ValueError, match="at least 3 cases"):
        make_folds(["a", "b"], 3)
    bad = tmp_path / "splits_final.json"
    bad.write_text('{"train": ["a"], "val": ["b"]}')
    with pytest.raises(DatasetError, match=r"splits_final.json: expected a non-empty list"):
        read_splits(bad)
    bad.write_text('[{"train": ["a"], "val": ["a"]}]')
    with pytest.raises(DatasetError, match="both train and val"):
        read_splits(bad)
    bad.write_text("[{")
    with pytest.raises(DatasetError, match="cannot read split file"):
        read_splits(bad)
