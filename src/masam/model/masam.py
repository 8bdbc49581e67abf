"""The MA-SAM model: slice stacks in, per-slice class logits out."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from .correction import mask_prompt
from .image_encoder import ImageEncoderViT3D
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder

if TYPE_CHECKING:
    from ..spec import InputSpec
    from .config import ModelConfig


def parameter_group(name: str) -> str:
    """Which part of the model a parameter (or buffer) name belongs to."""
    if name.startswith("prompt_encoder."):
        return "prompt_encoder"
    if name.startswith("mask_decoder."):
        return "mask_decoder"
    if name.startswith("image_encoder.fact.") or ".attn.fact_" in name:
        return "fact"
    if ".adapter_attn." in name or ".adapter_mlp." in name:
        return "adapters"
    return "image_encoder"


def is_pretrained_encoder_weight(name: str) -> bool:
    """True for the image-encoder tensors that come from a SAM checkpoint."""
    return parameter_group(name) == "image_encoder"


class MASAM(nn.Module):
    """MA-SAM: SAM's encoder with FacT and 3D adapters, its prompt encoder and a multi-class
    mask decoder.

    ``forward(x, boxes=None)``: ``x`` ``[B, D, 3, S, S]`` floats in [0, 1] (S = image size);
    ``boxes`` optional ``[B, D, 4]`` (x0, y0, x1, y1 in input pixels; a NaN row = no box for
    that slice). Returns ``{"logits": [B, D, K+1, S, S], "iou_predictions": [B, D, K+1]}``.
    """

    def __init__(
        self,
        image_encoder: ImageEncoderViT3D,
        prompt_encoder: PromptEncoder,
        mask_decoder: MaskDecoder,
        config: ModelConfig,
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.config = config
        # Set by the loaders and the trainer: which SAM weights the encoder came from, what input
        # the model expects, and free-form metadata; all travel with our weights files.
        self.base_fingerprint: str | None = None
        self.input_spec: InputSpec | None = None
        self.metadata: dict = {}

    @property
    def image_size(self) -> int:
        return self.image_encoder.img_size

    def set_trainable(self) -> None:
        """Freeze SAM's pre-trained encoder weights (when the encoder is pre-trained); train the
        rest: FacT, adapters, prompt encoder and mask decoder."""
        for name, param in self.named_parameters():
            param.requires_grad = not (self.config.pretrained_encoder and is_pretrained_encoder_weight(name))

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        self.image_encoder.grad_checkpointing = enabled

    def set_attention(self, path: str) -> None:
        """The image encoder's attention computation by name: "sdpa" (default), "sdpa-bias",
        "sdpa-columns" or "reference" (see ``image_encoder.ATTENTION_PATHS``)."""
        self.image_encoder.set_attention(path)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Image embeddings of a batch of stacks: ``[B, D, 3, S, S]`` -> ``[B * D, 256, S/16, S/16]``."""
        if x.ndim != 5 or x.shape[2] != 3:
            raise ValueError(f"expected input [B, D, 3, H, W], got {list(x.shape)}")
        b, d, _, h, w = x.shape
        if h != self.image_size or w != self.image_size:
            raise ValueError(
                f"this model takes {self.image_size}x{self.image_size} slices (its image size), got {h}x{w}: resize "
                "the stacks, or give whole volumes to masam.Predictor, which resizes them"
            )
        return self.image_encoder(x.reshape(b * d, 3, h, w), d)

    def decode(
        self,
        embeddings: torch.Tensor,
        batch: int,
        boxes: torch.Tensor | None = None,
        points: torch.Tensor | None = None,
        masks: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Masks from image embeddings ``[B * D, 256, h, w]``; see :meth:`forward` for the output.
        ``points`` ``[B, D, N, 3]`` and ``masks`` ``[B, D, 1, 4h, 4w]``: see :meth:`decode_rows`."""
        n = embeddings.shape[0]
        slices = n // batch
        if boxes is not None:
            if boxes.shape != (batch, slices, 4):
                raise ValueError(f"expected boxes [B, D, 4] = {[batch, slices, 4]}, got {list(boxes.shape)}")
            boxes = boxes.reshape(n, 4).to(embeddings.dtype)
        if points is None and masks is None:  # one decoder call for the whole batch (boxes or nothing)
            sparse, dense = self.prompt_encoder(boxes=boxes, batch_size=1)
            logits, iou = self.mask_decoder(embeddings, self.prompt_encoder.get_dense_pe(), sparse, dense)
        else:
            flat_points = None if points is None else points.reshape(n, *points.shape[2:])
            flat_masks = None if masks is None else masks.reshape(n, *masks.shape[2:])
            logits, iou = self.decode_rows(embeddings, boxes, flat_points, flat_masks)
        return {
            "logits": logits.reshape(batch, slices, *logits.shape[1:]),
            "iou_predictions": iou.reshape(batch, slices, -1),
        }

    def decode_rows(
        self,
        embeddings: torch.Tensor,
        boxes: torch.Tensor | None = None,
        points: torch.Tensor | None = None,
        masks: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``[n, K+1, S, S]`` and IoU predictions ``[n, K+1]`` of ``n`` slice embeddings
        ``[n, 256, h, w]``, each slice with its own prompts (issue 22):

        - ``boxes`` ``[n, 4]`` (NaN row: prompted, no target: two not-a-point tokens, unless the
          slice has points, which then stand alone);
        - ``points`` ``[n, N, 3]`` (x, y, label) in input pixels, label 1 include, 0 exclude, -1 none
          (the real points first); a slice's points without a box get SAM's one padding point;
        - ``masks`` ``[n, 1, 4h, 4w]`` dense mask prompts (a NaN row: none, the no-mask embedding).

        Slices are decoded in groups of one prompt layout, so a slice's result depends only on its
        own prompts, never on what else is in the batch."""
        n = embeddings.shape[0]
        count = (points[..., 2] >= 0).sum(-1) if points is not None else embeddings.new_zeros(n, dtype=torch.long)
        box_kind = torch.zeros(n, dtype=torch.long, device=embeddings.device)
        if boxes is not None:
            finite = torch.isfinite(boxes).all(-1)
            box_kind = torch.where(finite, 2, torch.where(count > 0, 0, 1))
        has_mask = torch.zeros_like(box_kind, dtype=torch.bool)
        if masks is not None:
            has_mask = torch.isfinite(masks).flatten(1).all(-1)
        keys = torch.stack([count.to(box_kind.device), box_kind, has_mask.long()], 1)
        logits = iou = None
        for key in torch.unique(keys, dim=0):
            rows = (keys == key).all(1).nonzero().flatten()
            k, kind, with_mask = (int(v) for v in key)
            prompts = {
                "points": (points[rows, :k, :2], points[rows, :k, 2]) if k else None,
                "boxes": boxes[rows].to(embeddings.dtype) if kind else None,
                "masks": masks[rows].to(embeddings.dtype) if with_mask else None,
            }
            sparse, dense = self.prompt_encoder(**prompts, batch_size=len(rows))
            part, part_iou = self.mask_decoder(embeddings[rows], self.prompt_encoder.get_dense_pe(), sparse, dense)
            if logits is None:
                logits = part.new_empty((n, *part.shape[1:]))
                iou = part_iou.new_empty((n, *part_iou.shape[1:]))
            logits[rows], iou[rows] = part, part_iou
        return logits, iou

    def forward(
        self,
        x: torch.Tensor,
        boxes: torch.Tensor | None = None,
        prompted: torch.Tensor | None = None,
        correction=None,
    ) -> dict[str, torch.Tensor]:
        """``x`` ``[B, D, 3, S, S]``; ``boxes`` ``[B, D, 4]`` (NaN rows: prompted, no target on that
        slice) or None; ``prompted`` ``[B]`` bool: which samples get their boxes (None: all), the
        others are decoded with no prompt tokens (prompt dropout, issue 14). Here rather than in the
        trainer so that DistributedDataParallel sees one forward call. Returns ``logits``
        ``[B, D, K+1, S/4, S/4]`` and ``iou_predictions`` ``[B, D, K+1]``.

        ``correction`` (issue 22, training with simulated clicks, e.g.
        :class:`masam.train.clicks.SimulatedClicks`): the encoder runs once and the decoder
        ``correction.rounds`` times (:meth:`forward_rounds`); ``rounds`` holds every round's logits."""
        if correction is not None:
            return self.forward_rounds(x, boxes, prompted, correction)
        if boxes is None or prompted is None or bool(prompted.all()):
            return self.decode(self.encode(x), x.shape[0], boxes)
        if not bool(prompted.any()):
            return self.decode(self.encode(x), x.shape[0], None)
        b, d = x.shape[:2]
        embeddings = self.encode(x)  # the encoder runs once; the decoder works per slice
        per_sample = embeddings.reshape(b, d, *embeddings.shape[1:])
        keep = prompted.to(x.device)
        with_box = self.decode(per_sample[keep].flatten(0, 1), int(keep.sum()), boxes[keep])
        without = self.decode(per_sample[~keep].flatten(0, 1), int((~keep).sum()), None)
        out = {}
        for key, value in with_box.items():
            merged = value.new_empty((b, *value.shape[1:]))
            merged[keep] = value
            merged[~keep] = without[key]
            out[key] = merged
        return out


    def forward_rounds(
        self, x: torch.Tensor, boxes: torch.Tensor | None, prompted: torch.Tensor | None, correction
    ) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        """Correction rounds on one encoding: round 0 decodes the prompted samples with their boxes
        and ``correction.first()`` points (an unprompted sample with nothing: its automatic
        prediction); each next round adds ``correction.next(logits)`` (one click per slice, from
        the last round's detached logits) and gives the last round's prediction as the mask prompt."""
        b, d = x.shape[:2]
        n = b * d
        embeddings = self.encode(x)
        keep = torch.ones(b, dtype=torch.bool, device=x.device) if prompted is None else prompted.to(x.device)
        keep_rows = keep.repeat_interleave(d)
        flat_boxes = None if boxes is None else boxes.reshape(n, 4).to(embeddings.dtype)
        points = correction.first()
        logits, rounds = None, []
        for r in range(correction.rounds):
            if r > 0:
                new = correction.next(logits.detach())
                points = new if points is None else torch.cat([points, new], 2)
            masks = None
            if logits is not None:
                size = self.prompt_encoder.mask_input_size
                masks = mask_prompt(logits.detach().flatten(0, 1), correction.label, size).to(embeddings.dtype)
            flat_points = None if points is None else points.reshape(n, *points.shape[2:])
            flat = embeddings.new_empty(0)
            for rows, boxed in ((keep_rows, flat_boxes is not None), (~keep_rows, False)):
                if not bool(rows.any()):
                    continue
                part, _ = self.decode_rows(  # unprompted samples get no box tokens
                    embeddings[rows],
                    flat_boxes[rows] if boxed else None,
                    None if flat_points is None else flat_points[rows],
                    None if masks is None else masks[rows],
                )
                if flat.numel() == 0:
                    flat = part.new_empty((n, *part.shape[1:]))
                flat[rows] = part
            logits = flat.reshape(b, d, *flat.shape[1:])
            rounds.append(logits)
        return {"logits": logits, "rounds": rounds}


def count_parameters(model: nn.Module) -> dict[str, dict[str, int]]:
    """Total and trainable parameter counts per group (image_encoder, fact, adapters,
    prompt_encoder, mask_decoder) and overall (key ``"total"``)."""
    groups: dict[str, dict[str, int]] = {}
    for name, param in model.named_parameters():
        entry = groups.setdefault(parameter_group(name), {"total": 0, "trainable": 0})
        entry["total"] += param.numel()
        entry["trainable"] += param.numel() if param.requires_grad else 0
    groups["total"] = {
        "total": sum(g["total"] for g in groups.values()),
        "trainable": sum(g["trainable"] for g in groups.values()),
    }
    return groups
