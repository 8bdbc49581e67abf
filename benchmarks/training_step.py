"""One training step: peak memory and time, per encoder size and setting.

Run by hand:

* CPU (issue 7, goal 2): ``python benchmarks/training_step.py`` -> vit_b, 512², batch 1 stack of
  5 slices, float32, with and without gradient checkpointing, and the original-like setting.
* GPU (goal 5): ``python benchmarks/training_step.py --device cuda --archs vit_b vit_l vit_h
  --batch-size 3 --settings bf16-ckpt bf16 fp16-original --out benchmarks/results/training_step_gpu.json``.

Settings: ``fp32``/``bf16`` (autocast), ``-ckpt`` adds gradient checkpointing of the encoder
blocks, and ``-original`` is the original code's way: no checkpointing and every attention matrix
materialised (PyTorch's math attention, as the original's explicit ``q @ k^T + rel_pos``), with
fp16 and a gradient scaler on the GPU as the original trained.

Each setting runs in a child process, so peak memory is its own: the peak resident set (RSS) on
the CPU, the peak of PyTorch's allocator on the GPU. A step is the project's own
(``masam.train.training_loss``, backward, AdamW over the trainable parameters); the first step
(which also creates the optimiser state) is a warm-up, the next ``--steps`` are timed. Weights
are random: time and memory do not depend on their values.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
from results_file import write_result  # the sibling module in benchmarks/

from masam.allocator import TRAINING_POLICIES
from masam.precision import PRECISIONS


def run_setting(
    arch: str, setting: str, batch: int, size: int, steps: int, device: str, classes: int, allocator: str = "auto"
) -> dict:
    from masam.allocator import configure_allocator, training_policy
    from masam.model import ModelConfig, build_model
    from masam.train import training_loss

    precision, *flags = setting.split("-")
    host_memory = training_policy(allocator, "ckpt" in flags)  # as `masam train`
    dtype = PRECISIONS[precision]
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch, size, num_classes=classes)).to(device)
    model.set_grad_checkpointing("ckpt" in flags)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=8e-4, weight_decay=0.1)
    scaler = torch.amp.GradScaler("cuda") if dtype is torch.float16 else None
    image = torch.rand(batch, 5, 3, size, size, device=device)
    label = torch.randint(0, classes + 1, (batch, 5, size, size), device=device)
    attention = contextlib.nullcontext
    if "original" in flags:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        def attention():
            return sdpa_kernel(SDPBackend.MATH)

    def step() -> float:
        with attention():
            configure_allocator(host_memory[0])  # the forward mode, then the backward one, as `masam train`
            loss, _, _ = training_loss(model, image, label, None, dtype)
            configure_allocator(host_memory[1])
            (scaler.scale(loss) if scaler else loss).backward()
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    step()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        loss = step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    seconds = sorted(times)[len(times) // 2]
    row = {
        "arch": arch,
        "setting": setting,
        "batch_stacks": batch,
        "image_size": size,
        "host_allocator": dict(zip(("forward", "backward"), host_memory)),
        "seconds_per_step": round(seconds, 3),
        "stacks_per_s": round(batch / seconds, 3),
        "loss_finite": bool(torch.isfinite(torch.tensor(loss))),
    }
    if device == "cuda":
        row["peak_allocated_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        row["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved() / 2**30, 2)
    else:
        row["peak_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--archs", nargs="+", default=["vit_b"], help="encoder sizes (default vit_b)")
    parser.add_argument(
        "--settings",
        nargs="+",
        default=["fp32", "fp32-ckpt", "fp32-original"],
        help="precision[-ckpt][-original] per run (default fp32 fp32-ckpt fp32-original)",
    )
    parser.add_argument("--batch-size", type=int, default=1, help="stacks of 5 slices per step (default 1)")
    parser.add_argument("--image-size", type=int, default=512, help="input size (default 512)")
    parser.add_argument("--steps", type=int, default=1, help="timed steps after the warm-up step (default 1)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads on the CPU (default 2)")
    parser.add_argument("--classes", type=int, default=8, help="foreground classes (default 8, as BTCV)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "training_step.json"))
    parser.add_argument(
        "--allocator",
        choices=["auto", *TRAINING_POLICIES],
        default="auto",
        help="host allocator policy, as masam train --host-allocator (default auto)",
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        arch, setting = args.child.split(":")
        row = run_setting(
            arch, setting, args.batch_size, args.image_size, args.steps, args.device, args.classes,
            allocator=args.allocator,
        )  # fmt: skip
        print("RESULT " + json.dumps(row), flush=True)
        return
    rows = []
    for arch in args.archs:
        for setting in args.settings:
            cmd = [sys.executable, __file__, "--child", f"{arch}:{setting}"]
            cmd += ["--device", args.device, "--batch-size", str(args.batch_size), "--image-size", str(args.image_size)]
            cmd += ["--steps", str(args.steps), "--threads", str(args.threads), "--classes", str(args.classes)]
            cmd += ["--allocator", args.allocator]
            done = subprocess.run(cmd, capture_output=True, text=True)
            lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
            if lines:
                row = json.loads(lines[-1][len("RESULT ") :])
            else:  # out of memory or another failure: keep the reason, go on with the next setting
                tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
                row = {"arch": arch, "setting": setting, "failed": tail[0][:300]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    result = {
        "device": args.device,
        "slices": 5,
        "classes": args.classes,
        "rows": rows,
    }
    if args.device == "cuda":
        result["gpu"] = torch.cuda.get_device_name(0)
    write_result(args.out, result)


if __name__ == "__main__":
    main()
