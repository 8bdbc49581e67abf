"""The model card: Hugging Face front matter, the sections the issue lists, filled from the manifest,
and gaps marked for the author."""

from __future__ import annotations

import json

import pytest

from masam.share.card import FILL, model_card


def manifest(**changes):
    record = {
        "name": "organs",
        "model": {"arch": "vit_b", "image_size": 512, "num_classes": 2, "fact_rank": 32, "fact_scale": 1.0,
                  "slices": 5, "adapter_kernel": 3, "labels": {"background": 0, "liver": 1, "kidney": 2}},
        "input": {"modality": "CT", "channels": ["CT"], "normalization": [{"modality": "CT", "window": [-200, 250]}]},
        "training_spacing": {"cases": 30, "min": [0.6, 0.6, 1.5], "median": [0.8, 0.8, 3.0], "max": [1.0, 1.0, 5.0]},
        "training": {"lr": 8e-4, "batch_size": 24, "epochs": 400, "dataset": "Dataset_BTCV"},
        "cross_validation": {"folds": {"fold_0": {"source": "validation predictions", "dice": {"liver": 0.9,
                                                  "kidney": 0.8}}, "fold_1": {"source": "validation predictions",
                                                  "dice": {"liver": 0.7, "kidney": 0.6}}},
                             "mean": {"liver": 0.8, "kidney": 0.7}},
        "postprocessing": {"1": True, "2": False},
        "dataset": {"name": "BTCV", "description": "abdominal CT", "numTraining": 30, "licence": "CC-BY-4.0"},
        "folds": [{"name": "fold_0"}, {"name": "fold_1"}],
        "sam": {"mode": "reference", "arch": "vit_b", "fingerprint": "ab" * 32, "file": "sam_vit_b_01ec64.pth"},
        "card": {"intended_use": "research on adult abdominal CT", "training_data": "BTCV challenge",
                 "limits": ["not validated for children"], "license": "apache-2.0"},
    }  # fmt: skip
    record.update(changes)
    return record


def front_matter(card: str) -> dict:
    """The YAML block (this writer's subset: scalars and lists of scalars, values as JSON)."""
    lines = card.split("\n")
    assert lines[0] == "---"
    end = lines.index("---", 1)
    out, key = {}, None
    for line in lines[1:end]:
        if line.startswith("- "):
            out[key].append(json.loads(line[2:]))
        else:
            key, _, value = line.partition(": ")
            key = key.rstrip(":")
            out[key] = [] if not value else (json.loads(value) if value.startswith('"') else value)
    return out


def test_front_matter_is_hugging_faces():
    meta = front_matter(model_card(manifest()))
    assert meta["license"] == "apache-2.0" and meta["library_name"] == "masam"
    assert meta["pipeline_tag"] == "image-segmentation" and "CT" in meta["tags"] and "masam" in meta["tags"]
    assert meta["base_model"] == "facebook/sam-vit-b"
    scratch = front_matter(model_card(manifest(sam={"mode": "none"}, card={})))
    assert scratch["license"] == "other" and "base_model" not in scratch


def test_sections_are_filled_from_the_manifest():
    card = model_card(manifest())
    for heading in ("# organs", "## Intended use", "## Modality, classes and input", "## Training data",
                    "## Cross-validation", "## Recipe", "## Limits", "## Licence", "## Use"):  # fmt: skip
        assert f"\n{heading}\n" in card
    assert "research on adult abdominal CT" in card and "| 1 | liver |" in card and "| 2 | kidney |" in card
    assert "| liver | 0.900 | 0.700 | 0.800 |" in card and "| kidney | 0.800 | 0.600 | 0.700 |" in card
    assert "keeps the largest component of: liver." in card
    assert "0.6×0.6×1.5 to 1×1×5" in card and '"window": [-200, 250]' in card
    assert "- not validated for children" in card and "Trained on CT only" in card
    assert "- Dataset licence: CC-BY-4.0" in card and "- Source of the images: BTCV challenge" in card
    assert "sam_vit_b_01ec64.pth" in card and "FacT rank 32" in card and "lr 0.0008" in card
    assert "masam predict -m organs" in card and FILL in card  # further limits stay for the author


@pytest.mark.parametrize("missing", ["intended_use", "license", "training_data"])
def test_missing_author_fields_are_marked(missing):
    fields = dict(manifest()["card"])
    fields.pop(missing)
    card = model_card(manifest(card=fields))
    section = {"intended_use": "## Intended use\n\n", "license": "- Model: ", "training_data": "- Source of the "
               "images: "}[missing]  # fmt: skip
    assert section + FILL in card


def test_a_model_without_metrics_says_so():
    card = model_card(manifest(cross_validation=None, dataset=None, training_spacing=None))
    assert "No validation Dice was recorded for this model." in card and "Spacing seen" not in card
    assert "- No validation was recorded; further limits" in card


def test_recipe_shows_what_defined_the_run():
    card = model_card(manifest(training={"iterations": 600, "epochs": 400, "num_folds": 5, "fold": None,
                                         "include_background": False, "seed": 0}))  # fmt: skip
    recipe = card[card.index("- Training settings:") :].split("\n")[0]
    assert recipe == "- Training settings: iterations 600, include_background false, seed 0"
