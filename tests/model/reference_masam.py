"""A slow, literal re-implementation of the original MA-SAM forward pass, for tests only.

It works on the two files a user has, in their own layouts (an official SAM state dict and an
original MA-SAM fine-tuned state dict), with plain functions and explicit loops: the original's
checkpoint fallback (bilinear resize of pos_embed and of the global blocks' rel-pos tables), its
Conv3d adapters on permuted tensors, unfolded FacT with the delta added to q and v, explicit
attention matrices with the decomposed relative position added, windows cut one by one, and the
decoder with its prompt-free tokens broadcast over the slices. Nothing here imports masam.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

GLOBAL_BLOCKS = {12: (2, 5, 8, 11), 24: (5, 11, 17, 23), 32: (7, 15, 23, 31)}
WINDOW = 14


def _ln(x, sd, p, eps):
    return F.layer_norm(x, (x.shape[-1],), sd[p + ".weight"], sd[p + ".bias"], eps)


def _ln2d(x, sd, p):
    u = x.mean(1, keepdim=True)
    s = (x - u).pow(2).mean(1, keepdim=True)
    x = (x - u) / torch.sqrt(s + 1e-6)
    return sd[p + ".weight"][:, None, None] * x + sd[p + ".bias"][:, None, None]


def _lin(x, sd, p, bias=True):
    return F.linear(x, sd[p + ".weight"], sd.get(p + ".bias") if bias else None)


def merged_state(sam: dict, adapter: dict, image_size: int) -> dict:
    """The original's loading: SAM weights (resized, decoder head dropped) overwritten by the
    fine-tuned file."""
    depth = 1 + max(int(k.split(".")[2]) for k in sam if k.startswith("image_encoder.blocks."))
    tokens = image_size // 16
    sd = {
        k: v.clone()
        for k, v in sam.items()
        if not any(s in k for s in ("mask_tokens", "output_hypernetworks_mlps", "iou_prediction_head"))
    }
    pe = sd["image_encoder.pos_embed"]
    if pe.shape[1] != tokens:
        pe = F.interpolate(pe.permute(0, 3, 1, 2), (tokens, tokens), mode="bilinear", align_corners=False)
        sd["image_encoder.pos_embed"] = pe.permute(0, 2, 3, 1)
        for i in GLOBAL_BLOCKS[depth]:
            for axis in "hw":
                k = f"image_encoder.blocks.{i}.attn.rel_pos_{axis}"
                t = sd[k][None, None]
                sd[k] = F.interpolate(t, (2 * tokens - 1, t.shape[-1]), mode="bilinear", align_corners=False)[0, 0]
    sd.update(adapter)
    sd["_depth"] = depth
    return sd


def _adapter(x, sd, b, suffix, d_size):
    p = f"image_encoder.ImageEncoderViT.blocks.{b}.Block.adapter_"
    n, hw, _, c = x.shape
    y = _ln(x, sd, p + "norm" + suffix, 1e-6)
    y = F.linear(y, sd[p + "linear_down" + suffix + ".weight"])
    w = y.shape[-1]
    y = y.reshape(n // d_size, d_size, hw, hw, w).permute(0, 4, 1, 2, 3)
    y = F.conv3d(y, sd[p + "conv" + suffix + ".weight"], sd[p + "conv" + suffix + ".bias"], padding=(1, 0, 0))
    y = y.permute(0, 2, 3, 4, 1).reshape(n, hw, hw, w)
    y = F.gelu(y)
    return x + F.linear(y, sd[p + "linear_up" + suffix + ".weight"])


def _rel_table(table, size):
    idx = torch.tensor([[i - j + size - 1 for j in range(size)] for i in range(size)])
    return table[idx]


def _attention(x, sd, b, heads, scale):
    p = f"image_encoder.blocks.{b}.attn"
    n, h, w, c = x.shape
    qkv = _lin(x, sd, p + ".qkv")
    u = F.linear(x, sd["image_encoder.FacTu.weight"])
    v_fact = sd["image_encoder.FacTv.weight"]
    qkv[..., :c] += scale * F.linear(F.linear(u, sd[f"q_FacTs_{b:03d}"]), v_fact)
    qkv[..., -c:] += scale * F.linear(F.linear(u, sd[f"v_FacTs_{b:03d}"]), v_fact)
    qkv = qkv.reshape(n, h * w, 3, heads, c // heads).permute(2, 0, 3, 1, 4).reshape(3, n * heads, h * w, -1)
    q, k, v = qkv[0], qkv[1], qkv[2]
    attn = (q * (c // heads) ** -0.5) @ k.transpose(-2, -1)
    rh = _rel_table(sd[p + ".rel_pos_h"], h)
    rw = _rel_table(sd[p + ".rel_pos_w"], w)
    rq = q.reshape(n * heads, h, w, -1)
    rel_h = torch.einsum("bhwc,hkc->bhwk", rq, rh)
    rel_w = torch.einsum("bhwc,wkc->bhwk", rq, rw)
    attn = (attn.view(n * heads, h, w, h, w) + rel_h[..., None] + rel_w[..., None, :]).view(n * heads, h * w, h * w)
    out = attn.softmax(-1) @ v
    out = out.view(n, heads, h, w, -1).permute(0, 2, 3, 1, 4).reshape(n, h, w, c)
    return _lin(out, sd, p + ".proj")


def _windowed(x, fn, window=WINDOW):
    n, h, w, c = x.shape
    hp, wp = math.ceil(h / window) * window, math.ceil(w / window) * window
    padded = x.new_zeros(n, hp, wp, c)
    padded[:, :h, :w] = x
    pieces = {}
    for i in range(0, hp, window):
        for j in range(0, wp, window):
            pieces[i, j] = fn(padded[:, i : i + window, j : j + window])
    rows = [torch.cat([pieces[i, j] for j in range(0, wp, window)], 2) for i in range(0, hp, window)]
    return torch.cat(rows, 1)[:, :h, :w]


def encode(sd, x, d_size, heads, scale, window=WINDOW, global_blocks=None):
    """``x`` ``[N, 3, S, S]`` -> image embeddings ``[N, 256, S/16, S/16]``. ``window`` and
    ``global_blocks``: SAM's (14, the blocks of :data:`GLOBAL_BLOCKS`) unless given (for masam's
    vit_tiny test size)."""
    depth = sd["_depth"]
    global_blocks = GLOBAL_BLOCKS[depth] if global_blocks is None else global_blocks
    x = F.conv2d(x, sd["image_encoder.patch_embed.proj.weight"], sd["image_encoder.patch_embed.proj.bias"], stride=16)
    x = x.permute(0, 2, 3, 1) + sd["image_encoder.pos_embed"]
    for b in range(depth):
        p = f"image_encoder.blocks.{b}"
        x = _adapter(x, sd, b, "", d_size)
        y = _ln(x, sd, p + ".norm1", 1e-6)
        attend = lambda t, b=b: _attention(t, sd, b, heads, scale)  # noqa: E731
        y = attend(y) if b in global_blocks else _windowed(y, attend, window)
        x = x + y
        x = _adapter(x, sd, b, "_2", d_size)
        y = _ln(x, sd, p + ".norm2", 1e-6)
        x = x + _lin(F.gelu(_lin(y, sd, p + ".mlp.lin1")), sd, p + ".mlp.lin2")
    x = x.permute(0, 3, 1, 2)
    x = _ln2d(F.conv2d(x, sd["image_encoder.neck.0.weight"]), sd, "image_encoder.neck.1")
    return _ln2d(F.conv2d(x, sd["image_encoder.neck.2.weight"], padding=1), sd, "image_encoder.neck.3")


def _dec_attn(q, k, v, sd, p, heads=8):
    q, k, v = _lin(q, sd, p + ".q_proj"), _lin(k, sd, p + ".k_proj"), _lin(v, sd, p + ".v_proj")

    def split(t):
        return t.reshape(t.shape[0], t.shape[1], heads, -1).transpose(1, 2)

    q, k, v = split(q), split(k), split(v)
    attn = (q @ k.permute(0, 1, 3, 2)) / math.sqrt(q.shape[-1])
    out = attn.softmax(-1) @ v
    out = out.transpose(1, 2).reshape(out.shape[0], out.shape[2], -1)
    return _lin(out, sd, p + ".out_proj")


def _dense_pe(sd, grid):
    g = sd["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"]
    pe = torch.zeros(g.shape[1] * 2, grid, grid)
    for i in range(grid):
        for j in range(grid):
            c = torch.tensor([(j + 0.5) / grid, (i + 0.5) / grid]) * 2 - 1
            z = 2 * math.pi * (c @ g)
            pe[:, i, j] = torch.cat([torch.sin(z), torch.cos(z)])
    return pe[None]


def decode(sd, emb):
    """Prompt-free decoding: embeddings ``[N, 256, h, w]`` -> (logits ``[N, K+1, 16h, 16w]``, iou)."""
    n, c, h, w = emb.shape
    p = "mask_decoder.transformer"
    tokens = torch.cat([sd["mask_decoder.iou_token.weight"], sd["mask_decoder.mask_tokens.weight"]])[None]
    src = emb + sd["prompt_encoder.no_mask_embed.weight"].reshape(1, -1, 1, 1)
    keys = src.flatten(2).permute(0, 2, 1)
    key_pe = _dense_pe(sd, h).flatten(2).permute(0, 2, 1)
    queries = tokens
    for layer in range(2):
        lp = f"{p}.layers.{layer}"
        if layer == 0:
            queries = _dec_attn(queries, queries, queries, sd, lp + ".self_attn")
        else:
            q = queries + tokens
            queries = queries + _dec_attn(q, q, queries, sd, lp + ".self_attn")
        queries = _ln(queries, sd, lp + ".norm1", 1e-5)
        queries = queries + _dec_attn(queries + tokens, keys + key_pe, keys, sd, lp + ".cross_attn_token_to_image")
        queries = _ln(queries, sd, lp + ".norm2", 1e-5)
        queries = queries + _lin(F.relu(_lin(queries, sd, lp + ".mlp.lin1")), sd, lp + ".mlp.lin2")
        queries = _ln(queries, sd, lp + ".norm3", 1e-5)
        keys = keys + _dec_attn(keys + key_pe, queries + tokens, queries, sd, lp + ".cross_attn_image_to_token")
        keys = _ln(keys, sd, lp + ".norm4", 1e-5)
    queries = queries + _dec_attn(queries + tokens, keys + key_pe, keys, sd, p + ".final_attn_token_to_image")
    hs = _ln(queries, sd, p + ".norm_final_attn", 1e-5)
    up = keys.transpose(1, 2).reshape(n, c, h, w)
    u = "mask_decoder.output_upscaling"
    for conv, norm in ((0, 1), (3, 4), (6, 7), (9, None)):
        up = F.conv_transpose2d(up, sd[f"{u}.{conv}.weight"], sd[f"{u}.{conv}.bias"], stride=2)
        if norm is not None:
            up = _ln2d(up, sd, f"{u}.{norm}")
        up = F.gelu(up)
    num_tokens = sd["mask_decoder.mask_tokens.weight"].shape[0]

    def mlp(x, prefix):
        for i in range(3):
            x = _lin(x, sd, f"{prefix}.layers.{i}")
            x = F.relu(x) if i < 2 else x
        return x

    hyper = torch.stack(
        [mlp(hs[:, 1 + i], f"mask_decoder.output_hypernetworks_mlps.{i}") for i in range(num_tokens)], 1
    )
    b, cu, hu, wu = up.shape
    masks = (hyper @ up.view(b, cu, hu * wu)).view(b, -1, hu, wu)
    return masks, mlp(hs[:, 0], "mask_decoder.iou_prediction_head")


@torch.no_grad()
def forward(sam: dict, adapter: dict, x: torch.Tensor, image_size: int, scale: float = 1.0):
    """``x`` ``[B, D, 3, S, S]`` -> (embeddings ``[B*D, 256, S/16, S/16]``, logits ``[B, D, K+1, S, S]``,
    IoU ``[B, D, K+1]``)."""
    sd = merged_state(sam, adapter, image_size)
    b, d = x.shape[:2]
    heads = {768: 12, 1024: 16, 1280: 16}[sd["image_encoder.patch_embed.proj.weight"].shape[0]]
    emb = encode(sd, x.reshape(b * d, *x.shape[2:]), d, heads, scale)
    logits, iou = decode(sd, emb)
    return emb, logits.reshape(b, d, *logits.shape[1:]), iou.reshape(b, d, -1)
