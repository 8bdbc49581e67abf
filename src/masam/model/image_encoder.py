"""SAM's ViT image encoder with MA-SAM's FacT deltas and 3D adapters built into each block.

Tensor layout inside the encoder is channels-last, ``[N, H, W, C]`` with ``N = B * D``: the
slices of a stack are consecutive along the first axis, which is what the 3D adapters rely on.
Parameter names of the pre-trained parts follow the official SAM checkpoints, so those load
without renaming.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .common import LayerNorm2d, MLPBlock


class FacTFactors(nn.Module):
    """The factors FacT shares across blocks: ``U: dim -> r`` and ``V: r -> dim`` (V starts at zero,
    so every FacT delta is zero at initialisation)."""

    def __init__(self, dim: int, rank: int) -> None:
        super().__init__()
        self.u = nn.Linear(dim, rank, bias=False)
        self.v = nn.Linear(rank, dim, bias=False)
        nn.init.zeros_(self.v.weight)


class Adapter3D(nn.Module):
    """MA-SAM's 3D adapter: LayerNorm -> down-projection -> convolution over the slice axis
    (``kernel`` taps, zero padding at the stack ends) -> GELU -> up-projection, added to the input.
    ``kernel=1`` makes it a 2D adapter (the ablation without the third dimension).

    ``x``: ``[B * D, H, W, C]`` -> same shape.
    """

    def __init__(self, dim: int, width: int, kernel: int = 3) -> None:
        super().__init__()
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"adapter kernel must be odd and positive, got {kernel}")
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.down = nn.Linear(dim, width, bias=False)
        # Stored as the Conv3d the paper describes (and the original checkpoints hold, [w, w, 3, 1, 1]);
        # applied below as one channel matmul per tap on the channels-last tensor, which is the same
        # arithmetic without the two full-size permutes a Conv3d call needs.
        self.conv = nn.Conv3d(width, width, kernel_size=(kernel, 1, 1), padding="same")
        self.up = nn.Linear(width, dim, bias=False)

    def forward(self, x: torch.Tensor, slices: int) -> torch.Tensor:
        n, h, w, c = x.shape
        y = self.down(self.norm(x)).reshape(n // slices, slices, h * w, -1)
        taps = self.conv.weight[:, :, :, 0, 0]  # [out, in, k]: tap j reads slice d + j - k // 2
        half = taps.shape[-1] // 2
        z = F.linear(y, taps[..., half], self.conv.bias)
        for offset in range(1, min(half, slices - 1) + 1):
            z[:, offset:] += F.linear(y[:, :-offset], taps[..., half - offset])
            z[:, :-offset] += F.linear(y[:, offset:], taps[..., half + offset])
        z = self.up(F.gelu(z))
        return x + z.reshape(n, h, w, c)


def relative_position_index(size: int, device: torch.device | None = None) -> torch.Tensor:
    """``[size, size]`` index into a ``2 * size - 1`` table: entry (i, j) is ``i - j + size - 1``."""
    pos = torch.arange(size, device=device)
    return pos[:, None] - pos[None, :] + (size - 1)


# Largest additive attention bias built at once in inference. One 5-slice stack of vit_b at 512²
# needs 252 MB per global block; at 1024² one slice alone needs 805 MB, and the bias-free path
# (extra q/k columns) is used instead.
BIAS_BYTES = 2**28

# The attention computations, by name. "reference": SAM's arithmetic written out (scores
# materialised, softmax(q k^T / sqrt(d) + relative-position bias) v), slow but plain: the one the
# others are tested against. "sdpa-bias": the relative position as an additive bias inside
# scaled_dot_product_attention (fast without autograd). "sdpa-columns": the relative position as
# extra q/k columns (differentiable through the fused kernels). "sdpa" (default): bias without
# autograd while one image's bias fits in BIAS_BYTES, columns otherwise.
ATTENTION_PATHS = ("sdpa", "sdpa-bias", "sdpa-columns", "reference")


class Attention(nn.Module):
    """Multi-head self-attention with decomposed relative position and FacT deltas on q and v,
    windowed or global.

    ``x``: ``[N, H, W, C]`` -> ``[N, H, W, C]``. Rewrites that keep SAM's arithmetic while skipping
    work:

    * windows: qkv is computed on the real tokens only and the padding is filled with the qkv bias
      (what a zero-padded token gives); the output projection runs after the windows are merged,
      so padded tokens never go through it;
    * FacT is folded into the qkv weight outside training (no dropout, so the delta is linear);
    * relative position: without autograd, an additive bias inside
      ``scaled_dot_product_attention`` with q, k, v as strided views of qkv; with autograd, extra
      q/k columns (see :func:`_attention_position_columns`), because the fused kernels do not
      differentiate a mask and the unfused one would materialise every attention matrix.

    ``path`` names the computation (:data:`ATTENTION_PATHS`); every path gives the same result.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        input_size: tuple[int, int],
        rank: int,
        fact_scale: float = 1.0,
        fact_dropout: float = 0.1,
        window_size: int = 0,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.window_size = window_size
        head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size[0] - 1, head_dim))
        self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size[1] - 1, head_dim))
        self.fact_q = nn.Linear(rank, rank, bias=False)
        self.fact_v = nn.Linear(rank, rank, bias=False)
        self.fact_dropout = nn.Dropout(fact_dropout)
        self.fact_scale = fact_scale
        self.path = "sdpa"

    def _qkv(self, x: torch.Tensor, fact: FacTFactors, with_bias: bool = True) -> torch.Tensor:
        dim = x.shape[-1]
        bias = self.qkv.bias if with_bias else None
        if self.training:
            # Dropout acts on the rank-r activations of each token, so the delta cannot be folded.
            # V's product is added into the q and v columns of qkv in place: no full-width delta,
            # sum or concatenation is allocated (the linear's backward does not need its output).
            qkv = F.linear(x, self.qkv.weight, bias)
            u = fact.u(x)
            rows = qkv.view(-1, 3 * dim)
            for columns, core in ((slice(0, dim), self.fact_q), (slice(2 * dim, 3 * dim), self.fact_v)):
                delta = self.fact_dropout(core(u)).view(rows.shape[0], -1)
                rows[:, columns].addmm_(delta, fact.v.weight.t().to(rows.dtype), alpha=self.fact_scale)
            return qkv
        # Without dropout the delta is linear in x: fold s * V C U into the q and v rows of the
        # qkv weight, which costs one dim x dim product instead of four rank-r passes over tokens.
        u, v_ = fact.u.weight, fact.v.weight
        delta_q = self.fact_scale * (v_ @ (self.fact_q.weight @ u))
        delta_v = self.fact_scale * (v_ @ (self.fact_v.weight @ u))
        w_q, w_k, w_v = self.qkv.weight.split(dim, dim=0)
        weight = torch.cat([w_q + delta_q, w_k, w_v + delta_v], dim=0)
        return F.linear(x, weight, bias)

    def _attend(self, qkv: torch.Tensor) -> torch.Tensor:
        """``qkv`` ``[N, h, w, 3C]`` -> attention output ``[N, h, w, C]`` (before the projection)."""
        n, h, w, c3 = qkv.shape
        heads = self.num_heads
        head_dim = c3 // 3 // heads
        q, k, v = qkv.reshape(n, h * w, 3, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)  # views
        q_grid = q.reshape(n, heads, h, w, head_dim)
        rel_h = torch.einsum("nghwc,hkc->nghwk", q_grid, self.rel_pos_h[relative_position_index(h, qkv.device)])
        rel_w = torch.einsum("nghwc,wkc->nghwk", q_grid, self.rel_pos_w[relative_position_index(w, qkv.device)])
        path = self.path
        if path == "sdpa":
            bias_bytes = heads * (h * w) ** 2 * qkv.element_size()  # per image
            path = "sdpa-columns" if qkv.requires_grad or bias_bytes > BIAS_BYTES else "sdpa-bias"
        if path == "reference":
            out = reference_attention(q, k, v, rel_h, rel_w).transpose(1, 2)
        elif path == "sdpa-columns":
            out = _attention_position_columns(q, k, v, rel_h, rel_w).transpose(1, 2)
        else:
            out = _attention_position_bias(q, k, v, rel_h, rel_w)
        return out.reshape(n, h, w, heads * head_dim)

    def forward(self, x: torch.Tensor, fact: FacTFactors) -> torch.Tensor:
        win = self.window_size
        h, w = x.shape[1:3]
        pad_h, pad_w = ((-h) % win, (-w) % win) if win > 0 else (0, 0)
        # A zero-padded token's q, k, v is the qkv bias. Without autograd it is written into the
        # padding; with autograd the bias is added after padding instead, because each write into
        # a region of the padded tensor would make backward clone its whole gradient.
        bias_after_padding = bool(pad_h or pad_w) and torch.is_grad_enabled()
        qkv = self._qkv(x, fact, with_bias=not bias_after_padding)
        if win > 0:
            if bias_after_padding:
                qkv = F.pad(qkv, (0, 0, 0, pad_w, 0, pad_h)).add_(self.qkv.bias.to(qkv.dtype))
            elif pad_h or pad_w:
                qkv = F.pad(qkv, (0, 0, 0, pad_w, 0, pad_h))
                qkv[:, h:] = self.qkv.bias.to(qkv.dtype)
                qkv[:, :, w:] = self.qkv.bias.to(qkv.dtype)
            windows, padded_hw = window_partition(qkv, win)
            out = window_unpartition(self._attend(windows), win, padded_hw, (h, w))
        else:
            out = self._attend(qkv)
        return self.proj(out)


def reference_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rel_h: torch.Tensor, rel_w: torch.Tensor
) -> torch.Tensor:
    """SAM's attention written out: ``softmax(q k^T / sqrt(d) + B) v`` with the decomposed relative
    position ``B[(qh, qw), (kh, kw)] = rel_h[qh, qw, kh] + rel_w[qh, qw, kw]``, every score
    materialised. Shapes as :func:`_attention_position_columns`."""
    n, heads, hw, head_dim = q.shape
    bias = (rel_h[..., :, None] + rel_w[..., None, :]).reshape(n, heads, hw, hw)
    scores = (q * head_dim**-0.5) @ k.transpose(-2, -1) + bias.to(q.dtype)
    return scores.softmax(dim=-1) @ v


def _attention_position_bias(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rel_h: torch.Tensor, rel_w: torch.Tensor
) -> torch.Tensor:
    """Attention with the relative position as an additive SDPA bias, built for a few images at a
    time so that it stays within BIAS_BYTES: ``[N, heads, h*w, d]`` -> ``[N, h*w, heads, d]``.

    Without autograd a ``[n, heads, hw, hw]`` bias is cheaper than the extra columns: SDPA reads it
    once, and q, k, v stay strided views of qkv (no copies). einsum hands back permuted layouts, and
    a broadcast sum of those would be laid out alike and copied once more."""
    n, heads, hw, _ = q.shape
    rel_h, rel_w = rel_h.contiguous(), rel_w.contiguous()
    step = max(1, BIAS_BYTES // (heads * hw * hw * q.element_size()))
    parts = []
    for i in range(0, n, step):
        j = min(i + step, n)
        bias = relative_position_bias(rel_h[i:j], rel_w[i:j])
        o = F.scaled_dot_product_attention(q[i:j], k[i:j], v[i:j], attn_mask=bias.to(q.dtype))
        parts.append(o.transpose(1, 2))  # SDPA's output is laid out [n, hw, heads, d]
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def relative_position_bias(rel_h: torch.Tensor, rel_w: torch.Tensor) -> torch.Tensor:
    """The additive attention bias of decomposed relative position: ``rel_h`` ``[N, heads, h, w, h]``
    and ``rel_w`` ``[N, heads, h, w, w]`` -> ``[N, heads, h*w, h*w]`` whose entry (query (i, j), key
    (k, l)) is ``rel_h[..., i, j, k] + rel_w[..., i, j, l]``."""
    n, heads, h, w, _ = rel_h.shape
    if h * w <= 256 and rel_h.dtype != torch.float32:
        # bf16 windows: one GEMM with a one-hot [h + w, h*w] matrix, 2.6x faster on the CPU than
        # a bf16 sum whose innermost axis is only w long, and exact (two non-zero products per
        # entry, accumulated in float32). In float32 the GEMM is the slower one.
        eye_h = torch.eye(h, dtype=rel_h.dtype, device=rel_h.device)[:, :, None].expand(h, h, w).reshape(h, h * w)
        eye_w = torch.eye(w, dtype=rel_w.dtype, device=rel_w.device)[:, None, :].expand(w, h, w).reshape(w, h * w)
        return torch.cat([rel_h, rel_w], dim=-1).matmul(torch.cat([eye_h, eye_w])).view(n, heads, h * w, h * w)
    # rel_h spread over the key columns, then rel_w added in place: 10-30% faster than one
    # broadcast sum into a new tensor
    bias = rel_h[..., :, None].expand(n, heads, h, w, h, w).contiguous()
    return bias.add_(rel_w[..., None, :]).view(n, heads, h * w, h * w)


def _attention_position_columns(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rel_h: torch.Tensor, rel_w: torch.Tensor
) -> torch.Tensor:
    """Attention with the decomposed relative position carried as extra q/k columns.

    ``q . Rh[qh, kh] + q . Rw[qw, kw]`` is the dot product of the query's ``[rel_h, rel_w]`` with
    the key's one-hot (row, column), so it rides along inside SDPA's own ``q k^T``. Autograd then
    goes through the fused attention kernels, which do not differentiate an additive mask. The
    column count is padded to a multiple of 8, which CUDA's fused kernels need.

    ``q, k, v``: ``[N, heads, h*w, d]``; ``rel_h``: ``[N, heads, h, w, h]``; ``rel_w``:
    ``[N, heads, h, w, w]`` -> ``[N, heads, h*w, d]``.
    """
    n, heads, hw, head_dim = q.shape
    h, w = rel_h.shape[-1], rel_w.shape[-1]
    extra = -(-(head_dim + h + w) // 8) * 8 - head_dim
    rel = torch.cat([rel_h, rel_w], dim=-1).reshape(n, heads, hw, h + w)
    rows = torch.eye(h, device=q.device, dtype=k.dtype)[:, None, :].expand(h, w, h)
    cols = torch.eye(w, device=q.device, dtype=k.dtype)[None, :, :].expand(h, w, w)
    key_pos = torch.cat([rows, cols], dim=-1).reshape(hw, h + w).expand(n, heads, -1, -1)
    pad = (0, extra - h - w)
    q = torch.cat([q * head_dim**-0.5, F.pad(rel.to(q.dtype), pad)], dim=-1)
    k = torch.cat([k, F.pad(key_pos, pad)], dim=-1)
    v = F.pad(v, (0, extra))
    return F.scaled_dot_product_attention(q, k, v, scale=1.0)[..., :head_dim]


def window_partition(x: torch.Tensor, window: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """``[N, H, W, C]`` -> ``[N * nWin, window, window, C]``, zero-padding H and W up to a multiple
    of ``window``."""
    n, h, w, c = x.shape
    pad_h, pad_w = (-h) % window, (-w) % window
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.view(n, hp // window, window, wp // window, window, c).transpose(2, 3)
    return x.reshape(-1, window, window, c), (hp, wp)


def window_unpartition(
    windows: torch.Tensor, window: int, padded_hw: tuple[int, int], hw: tuple[int, int]
) -> torch.Tensor:
    """Inverse of :func:`window_partition`: ``[N * nWin, window, window, C]`` -> ``[N, H, W, C]``."""
    hp, wp = padded_hw
    h, w = hw
    c = windows.shape[-1]
    n = windows.shape[0] // ((hp // window) * (wp // window))
    x = windows.view(n, hp // window, wp // window, window, window, c).transpose(2, 3)
    x = x.reshape(n, hp, wp, c)
    # contiguous: a linear layer on the strided crop under CPU autocast (bf16) takes a batched
    # matmul path that materialises one copy of its weight per row (0.3 s per block for vit_b at
    # 512²); float32 copies the crop inside the linear anyway, so the copy here costs it nothing
    return x[:, :h, :w, :].contiguous() if (hp > h or wp > w) else x


class Block(nn.Module):
    """One ViT block of MA-SAM: 3D adapter, (windowed) attention with FacT, 3D adapter, MLP.

    ``x``: ``[B * D, H, W, C]`` -> same shape; ``slices`` is D.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        window_size: int,
        input_size: tuple[int, int],
        adapter_width: int,
        rank: int,
        fact_scale: float,
        fact_dropout: float,
        adapter_kernel: int = 3,
    ) -> None:
        super().__init__()
        attn_size = input_size if window_size == 0 else (window_size, window_size)
        self.adapter_attn = Adapter3D(dim, adapter_width, adapter_kernel)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, attn_size, rank, fact_scale, fact_dropout, window_size)
        self.adapter_mlp = Adapter3D(dim, adapter_width, adapter_kernel)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio), nn.GELU)

    def forward(self, x: torch.Tensor, slices: int, fact: FacTFactors) -> torch.Tensor:
        x = self.adapter_attn(x, slices)
        x = x + self.attn(self.norm1(x), fact)
        x = self.adapter_mlp(x, slices)
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """``[N, 3, H, W]`` -> ``[N, H/p, W/p, C]`` by a strided convolution."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # contiguous: the residual stream inherits this layout through every block, and a
        # channels-first one costs a copy before each LayerNorm and slow strided adds
        return self.proj(x).permute(0, 2, 3, 1).contiguous()


class ImageEncoderViT3D(nn.Module):
    """SAM's ViT encoder made slice-aware.

    ``x``: ``[B * D, 3, S, S]`` (slices of a stack consecutive) -> ``[B * D, out_chans, S/16, S/16]``.
    """

    def __init__(
        self,
        img_size: int,
        patch_size: int,
        embed_dim: int,
        depth: int,
        num_heads: int,
        global_attn_indexes: tuple[int, ...],
        window_size: int,
        adapter_width: int,
        rank: int,
        fact_scale: float = 1.0,
        fact_dropout: float = 0.1,
        mlp_ratio: float = 4.0,
        out_chans: int = 256,
        adapter_kernel: int = 3,
    ) -> None:
        super().__init__()
        self.img_size = img_size
        grid = img_size // patch_size
        self.patch_embed = PatchEmbed(patch_size, 3, embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, embed_dim))
        self.fact = FacTFactors(embed_dim, rank)
        self.blocks = nn.ModuleList(
            Block(
                embed_dim,
                num_heads,
                mlp_ratio,
                0 if i in global_attn_indexes else window_size,
                (grid, grid),
                adapter_width,
                rank,
                fact_scale,
                fact_dropout,
                adapter_kernel,
            )
            for i in range(depth)
        )
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dim, out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )
        self.grad_checkpointing = False

    def set_attention(self, path: str) -> None:
        """Choose the attention computation of every block by name (:data:`ATTENTION_PATHS`)."""
        if path not in ATTENTION_PATHS:
            raise ValueError(f"attention must be one of {', '.join(ATTENTION_PATHS)}, got {path!r}")
        for block in self.blocks:
            block.attn.path = path

    def forward(self, x: torch.Tensor, slices: int) -> torch.Tensor:
        """``slices``: D, the slices per stack (consecutive along the first axis of ``x``)."""
        x = self.patch_embed(x) + self.pos_embed
        for block in self.blocks:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, slices, self.fact, use_reentrant=False)
            else:
                x = block(x, slices, self.fact)
        return self.neck(x.permute(0, 3, 1, 2))
