"""CPU bf16: vit_b at 512², one 5-slice stack, against the bf16 GEMM rate measured in the same run.

Run by hand: ``python benchmarks/cpu_bf16.py [--repeats 3]``. Writes
``benchmarks/results/cpu_bf16.json``. Weights are random (speed does not depend on them).

Each round times, interleaved: a 2048² bf16 GEMM, the encoder in float32, under plain
``torch.autocast`` (bf16), along masam's bf16 path (``prepare_for_precision(model, "bf16")``: frozen
weights cast once, then autocast), with int8 dynamic quantisation of the linear layers called as
modules (float32 elsewhere; ``--no-int8`` leaves it out), and the GEMM again. The fraction of the
bf16 GEMM rate is taken per round against the higher of the two GEMM readings (the lower
fraction); the median round is the headline. The same figures by CPU time (``*_cpu``: this
process's CPU seconds over the thread count) are given too, because the machine is shared and a
neighbour's burst stretches wall time without the GEMM reading seeing it. 1384 GFLOP per stack is
SAM's architecture's count (see encoder_efficiency.py).

Agreement: the whole model's label map (argmax of the logits) of one stack, each variant against
float32, as the share of equal pixels (random weights; trained models: volume_modes.py).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path

import torch
from encoder_efficiency import encoder_gflop  # the sibling module in benchmarks/
from results_file import write_result

from masam.allocator import configure_allocator
from masam.model import ModelConfig, build_model
from masam.precision import autocast, prepare_for_precision


def gemm_rate(dtype: torch.dtype, n: int = 2048, repeats: int = 3) -> tuple[float, float]:
    """GFLOP/s of an ``n``² GEMM in ``dtype`` (best of ``repeats``), by wall time and by CPU time."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    times = [_timed(lambda: a @ b) for _ in range(repeats)]
    return tuple(2 * n**3 / min(t[i] for t in times) / 1e9 for i in (0, 1))


def _timed(fn) -> tuple[float, float]:
    """Wall seconds, and this process's CPU seconds divided by the torch threads: what the wall time
    would have been with the cores to itself (the machine is shared; spinning threads count too,
    so this errs on the slow side)."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, (time.process_time() - cpu) / torch.get_num_threads()


def int8_model(model: torch.nn.Module) -> torch.nn.Module:
    """A copy with dynamic int8 quantisation of the encoder's linear layers that are called as
    modules (MLP, attention output, adapters); qkv and the FacT factors are read as weights."""
    from torch.ao.quantization import quantize_dynamic

    names = {
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and name.startswith("image_encoder.blocks.")
        and name.rsplit(".", 1)[-1] in ("proj", "down", "up", "lin1", "lin2")
    }  # fmt: skip
    return quantize_dynamic(copy.deepcopy(model), names, dtype=torch.qint8)


def variants(model: torch.nn.Module, int8: bool) -> dict[str, tuple[torch.nn.Module, str]]:
    """name -> (model, autocast precision)."""
    prepared = prepare_for_precision(copy.deepcopy(model), "bf16")
    out = {"fp32": (model, "fp32"), "autocast_bf16": (model, "bf16"), "masam_bf16": (prepared, "bf16")}
    if int8:
        out["int8_dynamic"] = (int8_model(model), "fp32")
    return out


def agreement(models: dict, x: torch.Tensor) -> dict[str, float]:
    """Share of pixels whose label (argmax over classes) equals float32's, per variant."""
    labels = {}
    with torch.no_grad():
        for name, (model, precision) in models.items():
            with autocast(precision):
                labels[name] = model(x)["logits"].float().argmax(2)
    return {name: round((lab == labels["fp32"]).float().mean().item(), 5) for name, lab in labels.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--arch", default="vit_b")
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-int8", dest="int8", action="store_false", help="leave int8 out")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "cpu_bf16.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    configure_allocator("reuse")  # as masam predict
    torch.manual_seed(0)
    model = build_model(ModelConfig(args.arch, args.image_size, num_classes=4)).eval()
    models = variants(model, args.int8)
    x = torch.rand(1, 5, 3, args.image_size, args.image_size)
    gflop = encoder_gflop(args.arch, args.image_size)
    rounds = []
    with torch.no_grad():
        for m, precision in models.values():  # warm-up
            with autocast(precision):
                m.encode(x)
        for _ in range(args.repeats):
            gemm_before = gemm_rate(torch.bfloat16)
            row = {}
            for name, (m, precision) in models.items():
                with autocast(precision):
                    row[name], row[f"{name}_cpu"] = _timed(lambda m=m: m.encode(x))
            gemm_after = gemm_rate(torch.bfloat16)
            row["bf16_gemm"], row["bf16_gemm_cpu"] = (max(b, a) for b, a in zip(gemm_before, gemm_after))
            row["fraction"] = gflop / row["masam_bf16"] / row["bf16_gemm"]
            row["fraction_cpu"] = gflop / row["masam_bf16_cpu"] / row["bf16_gemm_cpu"]
            rounds.append({k: round(v, 3) for k, v in row.items()})
            print(rounds[-1])
    median = sorted(rounds, key=lambda r: r["fraction"])[(len(rounds) - 1) // 2]  # the lower middle when even
    names = list(models)
    result = {
        "arch": args.arch,
        "image_size": args.image_size,
        "slices": 5,
        "threads": args.threads,
        "gflop_per_stack": round(gflop, 1),
        "goal_fraction_of_bf16_gemm": 0.8,
        "fraction_of_bf16_gemm": median["fraction"],
        "fraction_of_bf16_gemm_cpu_time_median": statistics.median(r["fraction_cpu"] for r in rounds),
        "median_round": median,
        "speed_up_over_fp32_median": {n: round(statistics.median(r["fp32"] / r[n] for r in rounds), 2) for n in names},
        "speed_up_over_fp32_cpu_time_median": {
            n: round(statistics.median(r["fp32_cpu"] / r[f"{n}_cpu"] for r in rounds), 2) for n in names
        },
        "label_agreement_with_fp32_random_weights": agreement(models, x),
        "rounds": rounds,
    }
    write_result(args.out, result)


if __name__ == "__main__":
    main()
