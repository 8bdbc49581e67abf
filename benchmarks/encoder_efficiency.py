"""Image-encoder efficiency: GFLOP/s of one 5-slice stack against the machine's float32 GEMM peak.

Run by hand: ``python benchmarks/encoder_efficiency.py [--arch vit_b] [--sizes 256 512]``.
Writes ``benchmarks/results/encoder_efficiency.json``. Weights are random (speed does not depend
on them). FLOPs are SAM's architecture's (multiply-adds x 2, padded window tokens included, as the
original computes them); masam skips the padded tokens' qkv and projection, and the JSON gives that
smaller count too.

This machine's speed drifts with its neighbours (the GEMM peak read 112-185 GFLOP/s within one
hour), so each encoder pass is paired with GEMM-peak readings taken just before and just after it (the
higher one counts), and the fraction is computed per pair; the median pair is the headline figure.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from results_file import write_result  # the sibling module in benchmarks/

from masam.allocator import configure_allocator
from masam.model import ARCHS, ModelConfig, build_model


def gemm_peak_gflops(n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def encoder_gflop(
    arch_name: str, image_size: int, slices: int = 5, adapter_width: int | None = None, padded_projections: bool = True
) -> float:
    """GFLOP of one stack through the encoder; ``padded_projections=False`` leaves out the qkv and
    output projections of padded window tokens, which masam does not compute."""
    arch = ARCHS[arch_name]
    c, grid = arch.embed_dim, image_size // 16
    width = adapter_width or arch.adapter_width
    tokens = slices * grid * grid
    macs = tokens * 3 * 16 * 16 * c  # patch embedding
    for i in range(arch.depth):
        if i in arch.global_attn_indexes:
            attn_tokens, seq = tokens, grid * grid
        else:
            win = arch.window_size
            padded = -(-grid // win) * win
            attn_tokens, seq = slices * padded * padded, win * win
        macs += (attn_tokens if padded_projections else tokens) * 4 * c * c  # qkv + proj
        macs += attn_tokens * seq * c * 2  # q k^T and attn v
        macs += tokens * 8 * c * c  # MLP
        macs += 2 * tokens * (2 * c * width + 3 * width * width)  # two 3D adapters
    macs += tokens * (c * 256 + 9 * 256 * 256)  # neck
    return 2 * macs / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--arch", default="vit_b", help="encoder size (default vit_b)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512], help="image sizes (default 256 512)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--repeats", type=int, default=5, help="(GEMM peak, encoder pass) pairs per size (default 5)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "encoder_efficiency.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    configure_allocator("reuse")  # as masam predict
    rows = []
    for size in args.sizes:
        model = build_model(ModelConfig(args.arch, size, num_classes=4)).eval()
        x = torch.rand(1, 5, 3, size, size)
        gflop = encoder_gflop(args.arch, size)
        pairs = []
        with torch.no_grad():
            model.encode(x)  # warm-up
            for _ in range(args.repeats):
                before = gemm_peak_gflops(repeats=3)
                seconds = _timed(lambda m=model, x=x: m.encode(x))
                peak = max(before, gemm_peak_gflops(repeats=3))  # the higher reading: the lower fraction
                pairs.append({"gemm_peak_gflops": round(peak, 1), "seconds": round(seconds, 3),
                              "fraction": round(gflop / seconds / peak, 3)})  # fmt: skip
        median = sorted(pairs, key=lambda p: p["fraction"])[len(pairs) // 2]
        rows.append(
            {
                "image_size": size,
                "gflop_per_stack": round(gflop, 1),
                "gflop_computed_by_masam": round(encoder_gflop(args.arch, size, padded_projections=False), 1),
                "median_pair": median,
                "fraction_of_gemm_peak": median["fraction"],
                "seconds_per_stack_min": min(p["seconds"] for p in pairs),
                "pairs": pairs,
            }
        )
        print({k: v for k, v in rows[-1].items() if k != "pairs"})
    result = {
        "arch": args.arch,
        "slices": 5,
        "dtype": "float32",
        "threads": args.threads,
        "goal_fraction": 0.8,
        "original_fraction_reported": 0.45,
        "rows": rows,
    }
    write_result(args.out, result)


if __name__ == "__main__":
    main()
