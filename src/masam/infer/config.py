"""Settings of ``masam predict``."""

from __future__ import annotations

from dataclasses import dataclass

from ..options import setting
from ..precision import PRECISIONS
from .predictor import PREDICTION_MODES


@dataclass
class PredictConfig:
    model: str = setting(help="a run folder (its best model) or a weights file", group="files", short="-m")
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
        None, "model input size of an original MA-SAM file (masam files store theirs)", "files", default_text="512"
    )
    boxes: str | None = setting(None, "JSON {case: {slice: [x0, y0, x1, y1]}} box prompts, voxel units", "prompts")
    boxes_from_labels: str | None = setting(None, "derive one box per slice from the labels in this folder", "prompts")
    batch_size: int = setting(2, "stacks per forward pass", "runtime")
    mode: str = setting(
        "faithful",
        "faithful: every slice the centre of a stack (the paper's); fast: 5x fewer stacks, each slice once",
        "runtime",
        choices=tuple(PREDICTION_MODES),
    )
    stride: int | None = setting(None, "slices between stack centres (overrides --mode)", "runtime")
    precision: str = setting("fp32", "compute precision", "runtime", choices=tuple(PRECISIONS))
    device: str = setting("cpu", "cpu, cuda or cuda:N", "runtime")
    quiet: bool = setting(False, "no progress bars", "runtime")

    @property
    def stack_stride(self) -> int:
        """Slices between stack centres: ``stride`` if given, else the mode's."""
        return self.stride if self.stride is not None else PREDICTION_MODES[self.mode]
