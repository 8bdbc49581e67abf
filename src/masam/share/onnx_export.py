"""``masam export --format onnx``: each fold's model as two ONNX graphs beside its weights, and the
onnxruntime engine of ``masam predict --engine onnxruntime``.

* ``encoder.onnx``: ``stacks`` ``[B, D, 3, S, S]`` float32 in [0, 1] -> ``embeddings``
  ``[B * D, 256, S/16, S/16]`` (SAM's encoder with FacT and the 3D adapters; ``D`` fixed to the
  model's slices per stack, ``B`` free).
* ``decoder.onnx``: ``embeddings`` ``[N, 256, S/16, S/16]`` -> ``logits`` ``[N, K+1, S, S]``, no
  prompt; ``decoder_boxes.onnx`` (models trained with box prompts): also ``boxes`` ``[N, 4]``
  (x0, y0, x1, y1 in model pixels; a NaN row: prompted, no target on that slice).

An interactive client runs the encoder once per stack and only the decoder per box. The graphs
are exported in float32 with PyTorch's TorchScript-based exporter (opset 17).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError, InputError

OPSET = 17
ENCODER, DECODER, DECODER_BOXES = "encoder.onnx", "decoder.onnx", "decoder_boxes.onnx"


class _Encoder(nn.Module):
    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, stacks: torch.Tensor) -> torch.Tensor:
        return self.model.encode(stacks)


class _Decoder(nn.Module):
    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, embeddings: torch.Tensor, boxes: torch.Tensor | None = None) -> torch.Tensor:
        # one "batch" of N slices: the decoder works per slice, so the stack structure does not matter
        return self.model.decode(embeddings, 1, None if boxes is None else boxes[None])["logits"][0]


def export_graphs(model, folder: str | os.PathLike, boxes: bool = False) -> list[Path]:
    """Write the encoder and decoder graphs of ``model`` (a :class:`masam.model.masam.MASAM`) into
    ``folder``; ``boxes``: also the decoder that takes box prompts. Returns the files written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = model.eval().float().to("cpu")
    size, slices = model.image_size, model.config.slices
    stacks = torch.rand(1, slices, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        embeddings = model.encode(stacks)
    written = [folder / ENCODER, folder / DECODER]
    _export(_Encoder(model), (stacks,), written[0], ["stacks"], ["embeddings"], {"stacks": {0: "batch"},
            "embeddings": {0: "n"}})  # fmt: skip
    _export(_Decoder(model), (embeddings,), written[1], ["embeddings"], ["logits"], {"embeddings": {0: "n"},
            "logits": {0: "n"}})  # fmt: skip
    if boxes:
        box = torch.tensor([[4.0, 4.0, size / 2, size / 2]]).expand(slices, 4).contiguous()
        written.append(folder / DECODER_BOXES)
        _export(_Decoder(model), (embeddings, box), written[2], ["embeddings", "boxes"], ["logits"],
                {"embeddings": {0: "n"}, "boxes": {0: "n"}, "logits": {0: "n"}})  # fmt: skip
    return written


def _export(module: nn.Module, args: tuple, path: Path, inputs: list, outputs: list, axes: dict) -> None:
    import warnings

    try:
        import onnx  # noqa: F401 - the exporter writes through it
    except ImportError:
        raise ConfigError("--format onnx needs onnx: pip install 'masam[onnx]'") from None
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python-level shape checks: shapes are fixed
        torch.onnx.export(module, args, str(path), input_names=inputs, output_names=outputs, dynamic_axes=axes,
                          opset_version=OPSET, dynamo=False)  # fmt: skip


class OnnxEngine:
    """A fold's graphs in onnxruntime, with :meth:`Predictor.forward_stacks`'s signature: stacks
    ``[B, D, 3, S, S]`` (and boxes ``[B, D, 4]`` or None) -> softmax probabilities ``[B, D, K+1, S, S]``."""

    def __init__(self, folder: str | os.PathLike, threads: int | None = None) -> None:
        try:
            import onnxruntime
        except ImportError:
            raise ConfigError("--engine onnxruntime needs onnxruntime: pip install 'masam[onnx]'") from None
        folder = Path(folder)
        if not (folder / ENCODER).is_file():
            raise InputError(f"{folder}: no {ENCODER} (export the model with --format onnx)")
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        session = lambda name: onnxruntime.InferenceSession(  # noqa: E731
            str(folder / name), options, providers=["CPUExecutionProvider"]
        )
        self.folder = folder
        self.encoder, self.decoder = session(ENCODER), session(DECODER)
        self.decoder_boxes = session(DECODER_BOXES) if (folder / DECODER_BOXES).is_file() else None

    def logits(self, stacks: torch.Tensor, boxes: torch.Tensor | None = None) -> torch.Tensor:
        """The model's logits ``[B, D, K+1, S, S]`` (float32, on the CPU)."""
        b, d = stacks.shape[:2]
        (embeddings,) = self.encoder.run(None, {"stacks": stacks.detach().float().cpu().numpy()})
        if boxes is None:
            (logits,) = self.decoder.run(None, {"embeddings": embeddings})
        elif self.decoder_boxes is None:
            raise InputError(f"{self.folder}: the ONNX export has no decoder for box prompts")
        else:
            flat = boxes.detach().float().cpu().reshape(b * d, 4).numpy()
            (logits,) = self.decoder_boxes.run(None, {"embeddings": embeddings, "boxes": flat})
        logits = torch.from_numpy(logits)
        return logits.reshape(b, d, *logits.shape[1:])

    def __call__(self, stacks: torch.Tensor, boxes: torch.Tensor | None = None) -> torch.Tensor:
        return torch.softmax(self.logits(stacks, boxes), dim=2).to(stacks.device)


def onnx_engine(path: str | os.PathLike) -> OnnxEngine:
    """The engine of a fold run or weights file whose graphs lie beside its weights."""
    path = Path(path)
    return OnnxEngine(path if path.is_dir() else path.parent)
