"""onnxruntime against PyTorch (issue 26): speed of one vit_b stack at 512², and label agreement of
whole volumes on trained models, for PyTorch fp32 / bf16 and onnxruntime fp32 / int8.

``python benchmarks/onnx_engine.py --runs RUN ... --images DIR --sam-checkpoint SAM`` (runs: trained
run folders; SAM: their base, for fine-tuned ones). int8: onnxruntime's dynamic quantisation of the
encoder graph's MatMul weights (``onnxruntime.quantization.quantize_dynamic``, QInt8); the decoder
stays fp32. Keep int8 only if its label maps agree with fp32 PyTorch on >= 99 % of voxels. Writes
``benchmarks/results/onnx_engine.json``; ``--no-vit-b`` skips the stack timing (e.g. for a smoke run).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from results_file import write_result  # the sibling module in benchmarks/

import masam
from masam.data import read_volume
from masam.infer import Predictor
from masam.run_folder import find_weights
from masam.share.onnx_export import ENCODER, OnnxEngine, export_graphs


def quantised_copy(folder: Path, out: Path) -> Path:
    """``folder``'s graphs with the encoder quantised to int8 (dynamic, weights QInt8) into ``out``."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out.mkdir(parents=True, exist_ok=True)
    for graph in folder.glob("*.onnx"):
        if graph.name == ENCODER:
            quantize_dynamic(str(graph), str(out / graph.name), weight_type=QuantType.QInt8)
        else:
            (out / graph.name).write_bytes(graph.read_bytes())
    return out


def engines(model, folder: Path, threads: int) -> dict:
    """Forward functions by name: PyTorch fp32 and bf16, onnxruntime fp32 and int8."""
    export_graphs(model, folder / "fp32")
    quantised_copy(folder / "fp32", folder / "int8")
    return {
        "torch_fp32": Predictor(model, precision="fp32").forward_stacks,
        "torch_bf16": Predictor(model, precision="bf16").forward_stacks,
        "onnxruntime_fp32": OnnxEngine(folder / "fp32", threads),
        "onnxruntime_int8": OnnxEngine(folder / "int8", threads),
    }


def stack_seconds(threads: int, repeats: int = 3) -> dict:
    """Seconds per 5-slice stack of a randomly initialised vit_b at 512² (speed), and the share of
    pixels whose argmax equals PyTorch fp32's on that stack."""
    model = masam.load_model(arch="vit_b", num_classes=3, image_size=512, rank=32)
    stacks = torch.rand(1, 5, 3, 512, 512)
    out = {}
    with tempfile.TemporaryDirectory() as folder:
        reference = None
        for name, forward in engines(model, Path(folder), threads).items():
            probs = forward(stacks, None)  # also the warm-up
            reference = probs.argmax(2) if reference is None else reference
            start = time.perf_counter()
            for _ in range(repeats):
                forward(stacks, None)
            seconds = (time.perf_counter() - start) / repeats
            equal = float((probs.argmax(2) == reference).float().mean())
            out[name] = {"seconds": round(seconds, 3), "argmax_equal": equal}
    return out


def agreement(run: Path, sam: str | None, images: Path, threads: int) -> dict:
    """Voxels equal to PyTorch fp32 and seconds per case for each engine, over ``images``."""
    model = masam.load_model(sam, find_weights(run))
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as folder:
        forwards = engines(model, Path(folder), threads)
        predictor = Predictor.from_files(run, sam, precision="fp32")
        for path in sorted(images.glob("*_0000.nii.gz")):
            volume = read_volume(path)
            labels = {}
            for name, forward in forwards.items():
                predictor.engine = forward
                start = time.perf_counter()
                labels[name] = predictor.predict(volume).labels
                rows.setdefault(name, {}).setdefault("seconds", []).append(time.perf_counter() - start)
                rows[name].setdefault("voxels_equal", []).append(float(np.mean(labels[name] == labels["torch_fp32"])))
    return {name: {k: round(float(np.mean(v)), 5) for k, v in row.items()} for name, row in rows.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="*", type=Path, default=[], help="trained run folders (masam train -o)")
    parser.add_argument("--images", type=Path, help="folder of CASE_0000.nii.gz for the agreement")
    parser.add_argument("--sam-checkpoint", default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-vit-b", action="store_true", help="skip the vit_b stack timing")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "onnx_engine.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    result: dict = {"goal": "int8 kept only if voxels_equal >= 0.99; onnxruntime fp32 voxels_equal >= 0.999"}
    if not args.no_vit_b:
        result["vit_b_512_seconds_per_stack"] = stack_seconds(args.threads)
    result["runs"] = {str(run): agreement(run, args.sam_checkpoint, args.images, args.threads) for run in args.runs}
    write_result(args.out, result)


if __name__ == "__main__":
    main()
