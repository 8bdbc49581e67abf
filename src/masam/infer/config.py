"""Settings of ``masam predict``."""

from __future__ import annotations

from dataclasses import dataclass

from ..options import setting
from ..precision import PRECISION_CHOICES
from ..spec import IMAGE_SIZE
from .predictor import PREDICTION_MODES


@dataclass
class PredictConfig:
    model: list[str] = setting(
        help="run folders (their best model), weights files, a folder of fold runs, a model archive (masam "
        "export) or an installed model's name; several: an ensemble (softmax probabilities averaged)",
        group="files", short="-m",
    )  # fmt: skip
    input: str = setting(help="an image, a folder of images, or a video frame folder", group="files", short="-i")
    output: str = setting(help="output folder", group="files", short="-o")
    sam_checkpoint: str | None = setting(None, "SAM base checkpoint the model was fine-tuned from", "files")
    modality: str | None = setting(None, "CT, MRI or RGB", "files", default_text="stored with the model")
    output_format: str | None = setting(
        None, "output extension, e.g. .nii.gz or .nrrd; dicom-seg: CASE.dcm (DICOM-SEG, DICOM input) and CASE.nii.gz",
        "files", default_text="the input's (.nii.gz for DICOM)",
    )  # fmt: skip
    # issue 15: DICOM input
    series: str | None = setting(None, "SeriesInstanceUID: predict this series of a DICOM folder", "files")
    save_probabilities: bool = setting(False, "also write CASE_probabilities.npz (float16)", "files")
    overlays: bool = setting(False, "write PNG slices with class contours to OUTPUT/overlays", "files")
    image_size: int | None = setting(
        None, "model input size of an original MA-SAM file (masam files store theirs)", "files",
        default_text=str(IMAGE_SIZE),
    )
    boxes: str | None = setting(
        None, "box prompts per case, JSON or .csv: boxes on slices {case: {slice: [x0, y0, x1, y1]}}, one 3D box "
        '{case: {"box": [x0, y0, z0, x1, y1, z1], "space": "voxel"|"world"}}, or one box to propagate '
        '{case: {"slice": S, "box": [x0, y0, x1, y1], "propagate": true}}, or clicks {case: {"points": [[x, y, z, 1], '
        '[x, y, z, 0]], "space": "voxel"|"world"}} (1 include, 0 exclude; a box may go with them) '
        "(docs/usage.md: prompts)",
        "prompts",
    )  # fmt: skip
    boxes_from_labels: str | None = setting(None, "derive one box per slice from the labels in this folder", "prompts")
    batch_size: int = setting(2, "stacks per forward pass", "runtime")
    mode: str = setting(
        "faithful",
        "faithful: every slice the centre of a stack (the paper's); fast: 5x fewer stacks, each slice once",
        "runtime",
        choices=tuple(PREDICTION_MODES),
    )
    stride: int | None = setting(None, "slices between stack centres (overrides --mode)", "runtime")
    device: str = setting("cpu", "cpu, cuda or cuda:N", "runtime")
    quiet: bool = setting(False, "no progress bars", "runtime")
    # issue 17: precision auto by default, cases split for job arrays
    precision: str = setting(
        "auto", "compute precision; auto: bf16 where the CPU or GPU computes it natively, else fp32", "runtime",
        choices=PRECISION_CHOICES,
    )  # fmt: skip
    num_parts: int = setting(1, "split the sorted cases into this many parts", "runtime")
    part_id: int = setting(0, "predict part I of --num-parts: cases[I::K]", "runtime", metavar="I")
    # issue 16: test-time mirroring and the run's post-processing
    tta: bool = setting(
        False, "test-time mirroring: probabilities averaged over the 8 flips of rows, columns and slices (8x "
        "the time)", "runtime",
    )  # fmt: skip
    # issue 26: the ONNX graphs of an archive exported with --format onnx
    engine: str = setting(
        "torch", "torch; onnxruntime: the model's ONNX graphs (masam export --format onnx), float32, same "
        "preparation and aggregation", "runtime", choices=("torch", "onnxruntime"),
    )  # fmt: skip
    postprocessing: bool = setting(
        True, "do not apply the run's postprocessing.json (masam postprocess)", "runtime",
        flag="--no-postprocessing",
    )  # fmt: skip

    @property
    def stack_stride(self) -> int:
        """Slices between stack centres: ``stride`` if given, else the mode's."""
        return self.stride if self.stride is not None else PREDICTION_MODES[self.mode]


@dataclass
class EnsembleConfig:
    """``masam ensemble``: saved probabilities of several models averaged (``nnUNetv2_ensemble``)."""

    input: list[str] = setting(
        help="folders of CASE_probabilities.npz (masam predict --save-probabilities), one per model", group="files",
        short="-i",
    )  # fmt: skip
    output: str = setting(help="output folder", group="files", short="-o")
    file_ending: str = setting(".nii.gz", "extension of the label maps written", "files")
    save_probabilities: bool = setting(False, "also write the averaged CASE_probabilities.npz", "files")
