"""MA-SAM's mask decoder: SAM's two-way-transformer decoder with one mask token per class
(background included) and an upscaling path that returns logits at the full input size."""

from __future__ import annotations

import torch
from torch import nn

from .common import MLP, LayerNorm2d
from .transformer import TwoWayTransformer


class MaskDecoder(nn.Module):
    """``image_embeddings`` ``[N, C, h, w]`` + prompt embeddings -> logits ``[N, K+1, 16h, 16w]`` and
    IoU predictions ``[N, K+1]``.

    Differences from SAM, as in MA-SAM: ``num_classes + 1`` mask tokens, all returned; four
    transposed-convolution x2 stages (C -> C/4 -> C/8 -> C/16 -> C/32) instead of two; hypernetwork
    MLPs ending in C/32 outputs. Module indexes in ``output_upscaling`` match the original files.
    """

    def __init__(self, transformer_dim: int, num_classes: int, transformer: TwoWayTransformer) -> None:
        super().__init__()
        self.transformer_dim = transformer_dim
        self.transformer = transformer
        self.num_mask_tokens = num_classes + 1
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        d = transformer_dim
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(d, d // 4, kernel_size=2, stride=2),
            LayerNorm2d(d // 4),
            nn.GELU(),
            nn.ConvTranspose2d(d // 4, d // 8, kernel_size=2, stride=2),
            LayerNorm2d(d // 8),
            nn.GELU(),
            nn.ConvTranspose2d(d // 8, d // 16, kernel_size=2, stride=2),
            LayerNorm2d(d // 16),
            nn.GELU(),
            nn.ConvTranspose2d(d // 16, d // 32, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(MLP(d, d, d // 32, 3) for _ in range(self.num_mask_tokens))
        self.iou_prediction_head = MLP(d, 256, self.num_mask_tokens, 3)

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n = image_embeddings.shape[0]
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        output_tokens = output_tokens.unsqueeze(0).expand(n, -1, -1)
        sparse = sparse_prompt_embeddings.expand(n, -1, -1)
        tokens = torch.cat([output_tokens, sparse], dim=1)

        src = image_embeddings + dense_prompt_embeddings
        b, c, h, w = src.shape
        hs, src = self.transformer(src, image_pe, tokens)
        iou_token_out = hs[:, 0, :]
        mask_tokens_out = hs[:, 1 : 1 + self.num_mask_tokens, :]

        upscaled = self.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1
        )
        b, c, h, w = upscaled.shape
        masks = (hyper_in @ upscaled.reshape(b, c, h * w)).reshape(b, -1, h, w)
        return masks, self.iou_prediction_head(iou_token_out)
