"""A literal re-implementation of the original MA-SAM training loop body (trainer.py:57-113 and
utils.py:18-57), for tests only: its loss (``calc_loss`` with its ``DiceLoss``), AdamW over the
parameters the original trains, and the rate it sets after every step. The forward pass is the
literal model of :mod:`tests.model.reference_masam`. Nothing here imports masam."""

from __future__ import annotations

import torch
from torch import nn

from tests.model import reference_masam


class DiceLoss(nn.Module):
    """utils.py:18-57, as written (the ``-100`` masking included)."""

    def __init__(self, n_classes):
        super().__init__()
        self.n_classes = n_classes

    def _one_hot_encoder(self, input_tensor):
        tensor_list = []
        for i in range(self.n_classes):
            temp_prob = 1.0 * (input_tensor == i)
            temp_prob[input_tensor == -100] = -100
            tensor_list.append(temp_prob.unsqueeze(1))
        return torch.cat(tensor_list, dim=1).float()

    def _dice_loss(self, score, target):
        target = target.float()
        smooth = 1e-5
        mask = target != -100
        intersect = torch.sum(score * target * mask)
        y_sum = torch.sum(target * target * mask)
        z_sum = torch.sum(score * score * mask)
        return 1 - (2 * intersect + smooth) / (z_sum + y_sum + smooth)

    def forward(self, inputs, target, softmax=False):
        if softmax:
            inputs = torch.softmax(inputs, dim=1)
        target = self._one_hot_encoder(target)
        loss = 0.0
        for i in range(self.n_classes):
            loss += self._dice_loss(inputs[:, i], target[:, i])
        return loss / self.n_classes


def calc_loss(logits, label_batch, ce_loss, dice_loss, dice_weight=0.8):
    """trainer.py:23-28 (``low_res_logits`` is the full-size logits: the decoder upsamples x16)."""
    loss_ce = ce_loss(logits, label_batch[:].long())
    loss_dice = dice_loss(logits, label_batch, softmax=True)
    return (1 - dice_weight) * loss_ce + dice_weight * loss_dice


def is_trained(key: str) -> bool:
    """The original's trainable tensors (sam_fact_tt_image_encoder.py:300-330): SAM's encoder is
    frozen except the adapters; FacT, the prompt encoder and the mask decoder train."""
    if key.startswith(("prompt_encoder.", "mask_decoder.")):
        return key != "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"  # a buffer
    return ".adapter_" in key or "FacT" in key


def original_steps(sam, adapter, image_batch, label_batch, steps, *, image_size, heads, window, global_blocks,
                   base_lr=8e-4, warmup_period=250, lr_exp=7.0, max_iterations=1000):  # fmt: skip
    """``steps`` iterations of the original's loop on one batch ``image_batch`` ``[B, D, S, S]``
    (grey, the loader's output), ``label_batch`` ``[B, D, S, S]``, in float32 (the CPU has no
    autocast to fp16 and no GradScaler). Returns (the loss of each step, the trained tensors)."""
    sd = reference_masam.merged_state(sam, adapter, image_size)
    params = {k: sd[k].clone().requires_grad_(True) for k in sd if k != "_depth" and is_trained(k)}
    sd.update(params)
    num_classes = sd["mask_decoder.mask_tokens.weight"].shape[0] - 1
    ce_loss, dice_loss = nn.CrossEntropyLoss(ignore_index=-100), DiceLoss(num_classes + 1)
    optimizer = torch.optim.AdamW(params.values(), lr=base_lr / warmup_period, betas=(0.9, 0.999), weight_decay=0.1)
    losses = []
    for iter_num in range(steps):
        image = image_batch.unsqueeze(2)
        image = torch.cat((image, image, image), dim=2)
        hw_size = image.shape[-1]
        labels = label_batch.contiguous().view(-1, hw_size, hw_size)
        b, d = image.shape[:2]
        emb = reference_masam.encode(sd, image.reshape(b * d, 3, hw_size, hw_size), d, heads, 1.0, window,
                                     global_blocks)  # fmt: skip
        logits, _ = reference_masam.decode(sd, emb)
        loss = calc_loss(logits, labels, ce_loss, dice_loss)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if iter_num < warmup_period:
            lr_ = base_lr * ((iter_num + 1) / warmup_period)
        else:
            lr_ = base_lr * (1.0 - (iter_num - warmup_period) / max_iterations) ** lr_exp
        for param_group in optimizer.param_groups:
            param_group["lr"] = lr_
        losses.append(loss.item())
    return losses, {k: v.detach() for k, v in params.items()}
