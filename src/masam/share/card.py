"""The model card (``README.md`` of an archive), written from the manifest alone: Hugging Face
front matter, then intended use, modality and classes, input rules, training data, cross-validation
Dice per class, the recipe, limits and the licence fields left for the author to fill in.

Values the author must give and did not are marked ``TO FILL IN`` so that the gap is visible."""

from __future__ import annotations

import json

FILL = "TO FILL IN"
_RECIPE = ("preset", "lr", "weight_decay", "batch_size", "accumulate", "iterations", "epochs", "stop_epoch",
           "warmup", "power", "dice_weight", "include_background", "precision", "augment", "augment_policy",
           "prompt", "box_label", "prompt_dropout", "box_3d", "fact_dropout", "reinit_head", "seed",
           "num_folds", "predict_with", "merge_labels")  # fmt: skip


def _classes(manifest: dict) -> list[tuple[int, str]]:
    labels = manifest["model"].get("labels") or {}
    names = {int(v): k for k, v in labels.items()}
    return [(c, names.get(c, f"class {c}")) for c in range(1, manifest["model"]["num_classes"] + 1)]


def _front_matter(manifest: dict) -> list[str]:
    modality = (manifest.get("input") or {}).get("modality")
    tags = ["masam", "medical-imaging", "segmentation", "3d", "segment-anything", *([modality] if modality else [])]
    licence = (manifest.get("card") or {}).get("license") or "other"
    lines = ["---", f"license: {json.dumps(licence)}", "library_name: masam", "pipeline_tag: image-segmentation",
             "tags:"]  # fmt: skip
    lines += [f"- {json.dumps(t)}" for t in tags]
    if manifest["sam"].get("mode") in ("included", "reference"):
        lines.append("base_model: facebook/sam-vit-" + manifest["model"]["arch"].removeprefix("vit_"))
    return [*lines, "---", ""]


def _input_section(manifest: dict) -> list[str]:
    spec, model = manifest.get("input") or {}, manifest["model"]
    lines = ["## Modality, classes and input", "", f"- Modality: {spec.get('modality') or FILL}",
             f"- Channels: {', '.join(spec.get('channels') or []) or FILL}"]  # fmt: skip
    for name, norm in zip(spec.get("channels") or [], spec.get("normalization") or []):
        lines.append(f"- Intensity rule of {name}: `{json.dumps(norm, sort_keys=True)}`")
    lines.append(f"- Stacks of {model['slices']} slices at {model['image_size']}×{model['image_size']} pixels")
    spacing = manifest.get("training_spacing")
    if spacing:
        show = " to ".join("×".join(f"{v:g}" for v in spacing[k]) for k in ("min", "max"))
        lines.append(f"- Spacing seen in training (x×y×z mm, {spacing['cases']} cases): {show}")
    lines += ["", "| value | class |", "|---|---|", *[f"| {c} | {n} |" for c, n in _classes(manifest)], ""]
    return lines


def _data_section(manifest: dict) -> list[str]:
    dataset, card = manifest.get("dataset") or {}, manifest.get("card") or {}
    lines = ["## Training data", ""]
    if dataset:
        lines.append(f"- Dataset: {dataset.get('name') or manifest['training'].get('dataset') or FILL}")
        for key in ("description", "reference", "release"):
            if dataset.get(key):
                lines.append(f"- {key.capitalize()}: {dataset[key]}")
        lines.append(f"- Training cases: {dataset.get('numTraining', FILL)}")
        lines.append(f"- Dataset licence: {_data_licence(manifest)}")
    lines.append(f"- Source of the images: {card.get('training_data') or FILL}")
    return [*lines, ""]


def _data_licence(manifest: dict) -> str:
    dataset = manifest.get("dataset") or {}
    return dataset.get("licence") or dataset.get("license") or FILL


def _metrics_section(manifest: dict) -> list[str]:
    cv = manifest.get("cross_validation")
    lines = ["## Cross-validation", ""]
    if not cv:
        return [*lines, "No validation Dice was recorded for this model.", ""]
    folds = list(cv["folds"])
    lines += ["Dice per class on each fold's held-out cases:", "",
              "| class | " + " | ".join(folds) + " | mean |", "|---|" + "---|" * (len(folds) + 1)]  # fmt: skip
    for name in cv["mean"]:
        cells = [f"{cv['folds'][f]['dice'].get(name, float('nan')):.3f}" for f in folds]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {cv['mean'][name]:.3f} |")
    sources = sorted({f["source"] for f in cv["folds"].values()})
    lines += ["", f"Source: {'; '.join(sources)}."]
    decision = manifest.get("postprocessing")
    if decision:
        kept = [n for c, n in _classes(manifest) if decision.get(str(c))]
        lines.append(f"Post-processing keeps the largest component of: {', '.join(kept) or 'no class'}.")
    return [*lines, ""]


def _recipe_section(manifest: dict) -> list[str]:
    model, train, sam = manifest["model"], manifest.get("training") or {}, manifest["sam"]
    base = {"none": "trained from random initialisation (no SAM weights)",
            "included": f"fine-tuned from SAM {model['arch']} (its frozen weights are in this archive)",
            "reference": f"fine-tuned from SAM {model['arch']}: `{sam.get('file')}`, base fingerprint "
                         f"`{str(sam.get('fingerprint'))[:16]}…` (give it with --sam-checkpoint)"}  # fmt: skip
    lines = ["## Recipe", "", f"- MA-SAM {model['arch']}, {base[sam['mode']]}",
             f"- FacT rank {model['fact_rank']}, scale {model['fact_scale']}; 3D adapters with kernel "
             f"{model.get('adapter_kernel')} over the slice axis", f"- Folds: {len(manifest['folds'])}"]  # fmt: skip
    shown = [k for k in _RECIPE if train.get(k) is not None]
    if train.get("iterations"):  # the step count wins over epochs
        shown = [k for k in shown if k not in ("epochs", "stop_epoch")]
    if train.get("fold") is None:
        shown = [k for k in shown if k != "num_folds"]
    settings = ", ".join(f"{k} {json.dumps(train[k])}" for k in shown)
    return [*lines, f"- Training settings: {settings}", ""]


def model_card(manifest: dict) -> str:
    """The card as Markdown with Hugging Face front matter."""
    card, name = manifest.get("card") or {}, manifest["name"]
    modality = (manifest.get("input") or {}).get("modality") or "images"
    limits = [f"- {line}" for line in card.get("limits") or []]
    validated = "Validated only on the cross-validation above" if manifest.get("cross_validation") else (
        "No validation was recorded")
    limits += [f"- Trained on {modality} only; other modalities give doubtful results (masam predict warns).",
               f"- {validated}; further limits: {FILL}."]  # fmt: skip
    lines = [*_front_matter(manifest), f"# {name}", "",
             f"A masam (MA-SAM) model segmenting {', '.join(n for _, n in _classes(manifest))} in 3D {modality}.",
             "", "## Intended use", "", card.get("intended_use") or FILL, "",
             *_input_section(manifest), *_data_section(manifest), *_metrics_section(manifest),
             *_recipe_section(manifest), "## Limits", "", *limits, "",
             "## Licence", "", f"- Model: {card.get('license') or FILL}",
             "- SAM's weights (when included): Apache-2.0 (Meta AI, segment-anything)",
             f"- Training data: {_data_licence(manifest)}", "", "## Use", "", "```bash", f"masam install {name}.zip",
             f"masam predict -m {name} -i images/ -o predictions/", "```", ""]  # fmt: skip
    return "\n".join(lines)
