"""Small models for the tests: a tiny MA-SAM, non-trivial weights, SAM's attention written out."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from masam.model import ModelConfig, build_model
from masam.model.image_encoder import Attention, relative_position_index


def tiny(num_classes=2, image_size=64, **kw):
    torch.manual_seed(0)
    return build_model(ModelConfig("vit_tiny", image_size, num_classes, rank=4, **kw))


def randomise(model, *, skip=()):
    """Give every tensor a non-trivial value (fresh models have zero position tables and V)."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not any(s in name for s in skip):
                p.copy_(
                    torch.randn(p.shape, generator=gen) * 0.05
                    + (1.0 if "norm" in name and p.ndim == 1 and name.endswith("weight") else 0.0)
                )
    return model


def sam_attention(attn: Attention, x: torch.Tensor) -> torch.Tensor:
    """SAM's global attention written out: materialised scores plus the decomposed relative
    position, softmax, values, projection (no FacT: its factors are zero here)."""
    n, h, w, c = x.shape
    heads, d = attn.num_heads, c // attn.num_heads
    q, k, v = F.linear(x, attn.qkv.weight, attn.qkv.bias).reshape(n, h * w, 3, heads, d).permute(2, 0, 3, 1, 4)
    rh = attn.rel_pos_h[relative_position_index(h)]
    rw = attn.rel_pos_w[relative_position_index(w)]
    q_grid = q.reshape(n, heads, h, w, d)
    rel = (
        torch.einsum("nghwc,hkc->nghwk", q_grid, rh)[..., :, None]
        + torch.einsum("nghwc,wkc->nghwk", q_grid, rw)[..., None, :]
    )
    scores = (q * d**-0.5) @ k.transpose(-1, -2) + rel.reshape(n, heads, h * w, h * w)
    out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(n, h, w, c)
    return attn.proj(out)


def tiny_ct_model():
    """A randomised vit_tiny at 64² with 2 classes and a CT normalisation: the shared model of the
    prediction tests (a fresh model's zero tables would make every output the same)."""
    import masam
    from masam.data import Normalization

    torch.manual_seed(0)
    model = randomise(masam.load_model(arch="vit_tiny", num_classes=2, image_size=64, rank=4))
    model.metadata = {"normalization": Normalization("CT").to_dict()}
    return model.eval()
