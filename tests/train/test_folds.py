"""Issue 16 end to end through the CLI: two folds of vit_tiny on the demo's phantom, their
validation/ kept, the post-processing decided on them, the folds ensembled by masam predict (equal
to the mean of each model's probabilities), and mirroring and post-processing acting in predict."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from masam.cli import main
from masam.demo import write_phantom_dataset
from masam.infer.postprocess import keep_largest_component
from masam.infer.predict_files import load_predictor
from masam.run_folder import POSTPROCESSING as POSTPROCESSING_FILE

pytestmark = pytest.mark.slow

TRAIN = ["--arch", "vit_tiny", "--image-size", "64", "--rank", "4", "--iterations", "12", "--batch-size", "4",
         "--lr", "1e-3", "--warmup", "2", "--val-every", "0", "--no-augment", "--workers", "0", "--quiet",
         "--num-folds", "2"]  # fmt: skip


def _probs(path):
    with np.load(path) as data:
        return data["probabilities"].astype(np.float32)


@pytest.fixture(scope="module")
def folds(tmp_path_factory):
    root = tmp_path_factory.mktemp("folds")
    dataset = write_phantom_dataset(root / "dataset", train_cases=4, test_cases=1)
    for fold in ("0", "1"):
        run = root / "runs" / f"fold_{fold}"
        assert main(["train", "-d", str(dataset), "-o", str(run), "--fold", fold, *TRAIN]) == 0
    return root, dataset


def test_folds_keep_validation_and_share_the_split(folds):
    root, dataset = folds
    splits = json.loads((root / "runs" / "splits_final.json").read_text())
    assert len(splits) == 2 and sorted(splits[0]["val"] + splits[1]["val"]) == [f"phantom_{i:03d}" for i in range(4)]
    for fold in (0, 1):
        run = root / "runs" / f"fold_{fold}"
        for case in splits[fold]["val"]:
            assert (run / "validation" / f"{case}.nii.gz").is_file()
            assert _probs(run / "validation" / f"{case}_probabilities.npz").shape[0] == 4
        assert (run / "progress.png").read_bytes()[:4] == b"\x89PNG"


def test_ensemble_is_the_mean_of_the_fold_models(folds, capsys):
    root, dataset = folds
    images, runs = dataset / "imagesTs", root / "runs"
    for fold in ("0", "1"):
        assert main(["predict", "-m", str(runs / f"fold_{fold}"), "-i", str(images), "-o", str(root / f"p{fold}"),
                     "--save-probabilities", "--quiet"]) == 0  # fmt: skip
    assert main(["predict", "-m", str(runs), "-i", str(images), "-o", str(root / "ens"), "--save-probabilities",
                 "--quiet"]) == 0  # fmt: skip  (a folder of fold runs: both folds)
    name = "phantom_004_probabilities.npz"
    expected = (_probs(root / "p0" / name) + _probs(root / "p1" / name)) / 2
    np.testing.assert_allclose(_probs(root / "ens" / name), expected, atol=2e-3)  # float16 files
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(root / "ens" / "phantom_004.nii.gz")))
    assert (labels == expected.argmax(0)).mean() > 0.999
    # masam ensemble of the saved files gives the same labels
    assert main(["ensemble", "-i", str(root / "p0"), str(root / "p1"), "-o", str(root / "ens2")]) == 0
    again = sitk.GetArrayFromImage(sitk.ReadImage(str(root / "ens2" / "phantom_004.nii.gz")))
    assert (again == labels).mean() > 0.999
    capsys.readouterr()
    for what in ("p0", "p1", "ens"):
        assert main(["evaluate", "-p", str(root / what), "-r", str(dataset / "labelsTs"),
                     "-o", str(root / f"{what}.json")]) == 0  # fmt: skip


def test_postprocessing_is_decided_on_the_folds_and_applied_by_predict(folds, capsys):
    root, dataset = folds
    runs = root / "runs"
    assert main(["postprocess", "-m", str(runs)]) == 0
    out = capsys.readouterr().out
    assert out.count(": validation mean Dice") == 2 and "cross-validation mean Dice" in out
    stored = json.loads((runs / "fold_0" / POSTPROCESSING_FILE).read_text())
    assert set(stored["keep_largest_component"]) == {"1", "2", "3"}
    # with the rule on for every class, predict keeps one component per class
    decision = {"keep_largest_component": {"1": True, "2": True, "3": True}}
    (runs / "fold_0" / POSTPROCESSING_FILE).write_text(json.dumps(decision))
    image = dataset / "imagesTs" / "phantom_004_0000.nii.gz"
    plain = load_predictor([runs / "fold_0"], postprocessing=False, batch_size=8).predict(image).labels
    post = load_predictor([runs / "fold_0"], batch_size=8).predict(image).labels
    np.testing.assert_array_equal(post, keep_largest_component(plain, [1, 2, 3]))
    for c in (1, 2, 3):
        assert ndimage.label(post == c, np.ones((3, 3, 3)))[1] <= 1


def test_tta_prediction_is_equivariant_to_flips(folds):
    root, dataset = folds
    image = sitk.GetArrayFromImage(sitk.ReadImage(str(dataset / "imagesTs" / "phantom_004_0000.nii.gz")))
    image = image[8:16]  # 8 slices: 8 stacks x 8 flips keeps the test short
    predictor = load_predictor([root / "runs" / "fold_1"], tta=True, batch_size=8)
    flipped = np.ascontiguousarray(image[::-1, :, ::-1])
    a = predictor.predict(image.astype(np.float32), return_probabilities=True).probabilities.astype(np.float32)
    b = predictor.predict(flipped.astype(np.float32), return_probabilities=True).probabilities.astype(np.float32)
    np.testing.assert_allclose(b[:, ::-1, :, ::-1], a, atol=2e-3)
