"""Benchmark (not a test): our VNet against MONAI's VNet, same settings, same weights, same machine, one run.

For each precision (fp32, bf16 autocast) and mode (training step, inference) it builds MONAI's
``VNet(spatial_dims=3, in_channels=1, out_channels=2, act="prelu", bias=True)`` and our ``networks.VNet()``
with MONAI's weights copied in, then alternates steps of the two models in one loop (the order flips every
round, so background load hits both alike) and prints per model: median seconds per step, throughput
(samples/s), peak memory of one step, model FLOP utilisation (MFU = counted FLOPs / median step time /
the machine's measured matmul peak of the same dtype) and the ratio ours/MONAI of throughput: the median over
steps of the paired ratio (MONAI step time / our step time of the same round), in wall time and in process CPU time
(the latter is less disturbed by other processes on a shared machine).
A training step is forward + cross-entropy + backward + Adam step (the reference's FPS definition without data
loading); inference is a no-grad forward in eval mode.

Peak memory (MiB above the level before the step): CUDA/NPU ``max_memory_allocated`` after a reset; CPU: the peak
of live tensor bytes from the PyTorch profiler's allocation events (RSS cannot separate two models sharing one
process). Measured on the last warm-up step, not timed; with ``--warmup 1`` a training step's peak includes the
creation of Adam's state (2 x 174 MiB, the same for both models). MFU can exceed 100 %: oneDNN's convolutions
can run faster than the MKL matmul used as the peak.

    python benchmarks/network.py                      # batch 2, 80x80x64, fp32 + bf16, train + infer
    python benchmarks/network.py --tiny               # CI smoke run (seconds)
    python benchmarks/network.py --modes infer --dtypes fp32 --steps 7
    python benchmarks/network.py --modes train --unfused   # also ours without networks.fused, same loop
    python benchmarks/network.py --batch 4 --modes train --reference-fps 17.93   # FPS against the reference (gpu.sh)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere: the repo root holds `networks`

from monai.networks.nets import VNet as MonaiVNet  # noqa: E402

from networks import VNet, fused, monai_vnet_to_ours  # noqa: E402
from pipeline.device import autocast, describe, max_memory_allocated, setup_device, synchronize  # noqa: E402

__all__ = ["Result", "main"]

DEFAULT_BATCH = 2
DEFAULT_SIZE = (80, 80, 64)  # one reference octant (64x80x80 z-y-x) in MONAI's x-y-z order
TINY_SIZE = (32, 32, 32)  # small, but training BatchNorm still sees 8 values per channel at the deepest level
MATMUL_SIZE = 2048  # square matmul for the machine peak (about 17 GFLOP, a few tenths of a second on 2 cores)
MATMUL_REPEATS = 5
LEARNING_RATE = 1e-4  # the reference's Adam lr
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}  # fp16: with a GradScaler, as the reference's apex O2
MIB = 2**20


@dataclass
class Result:
    """One model in one setting. Times in seconds, memory in MiB, FLOPs per step."""

    model: str
    mode: str
    dtype: str
    median_s: float
    cpu_median_s: float
    samples_per_s: float
    peak_mib: float | None
    flops: float
    mfu: float
    ratio: float  # ours/MONAI throughput: median over steps of the paired time ratio MONAI step / our step
    cpu_ratio: float  # the same with process CPU time, less sensitive to other processes on the machine


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=DEFAULT_BATCH, help="samples per step (default 2)")
    parser.add_argument("--size", type=int, nargs=3, default=DEFAULT_SIZE, metavar=("X", "Y", "Z"),
                        help="spatial size, multiples of 16 (default 80 80 64)")
    parser.add_argument("--steps", type=int, default=2,
                        help="timed steps per model and setting (default 2, to stay near 3 minutes on 2 cores)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per model first (default 1, >= 1)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | npu | auto (default cpu)")
    parser.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=None,
                        help="precisions (default fp32 bf16; fp32 alone on a CPU without native bf16, see below)")
    parser.add_argument("--modes", nargs="+", choices=["train", "infer"], default=["train", "infer"])
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--tiny", action="store_true", help=f"smoke run: size {TINY_SIZE}, batch 1, 1 warm-up, 2 steps")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile our model (MONAI's stays eager); compilation happens in the warm-up")
    parser.add_argument("--unfused", action="store_true",
                        help="also time ours without the fused BatchNorm/add + PReLU kernels (networks.fused), "
                             "as a third model in the same loop (training steps only: inference never fuses)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    parser.add_argument("--reference-fps", type=float, default=None, metavar="FPS",
                        help="also print each training setting's FPS (batch / median step time) and its ratio to FPS, "
                             "e.g. 17.93: the reference's 1-NPU training FPS (benchmarks/gpu.sh)")
    args = parser.parse_args(argv)
    if args.tiny:
        args.size, args.batch, args.steps, args.warmup = TINY_SIZE, 1, 2, 1
    if any(s % 16 for s in args.size) or args.batch < 1 or args.steps < 1 or args.warmup < 1:
        parser.error("--size must be multiples of 16; --batch, --steps and --warmup at least 1")
    return args


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 convolutions run natively: always off the CPU; on a CPU only with oneDNN bf16 support
    (AVX512-BF16 or AMX). Without it oneDNN emulates them, a 5^3 convolution forward about 300x slower than fp32
    (benchmarks/NOTES.md), so timing bf16 there measures the emulation, not the network."""
    if device.type != "cpu":
        return True
    supported = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return True if supported is None else bool(supported())


def default_dtypes(device: torch.device) -> list[str]:
    """fp32 and bf16, or fp32 alone on a CPU without native bf16 (:func:`native_bf16`)."""
    return ["fp32", "bf16"] if native_bf16(device) else ["fp32"]


def matmul_peak(device: torch.device, dtype: torch.dtype) -> float:
    """Measured FLOP/s of a big square matmul (best of a few), the denominator of MFU."""
    a = torch.randn(MATMUL_SIZE, MATMUL_SIZE, device=device, dtype=dtype)
    b = torch.randn(MATMUL_SIZE, MATMUL_SIZE, device=device, dtype=dtype)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(MATMUL_REPEATS):
        synchronize(device)
        start = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * MATMUL_SIZE**3 / best


def count_flops(batch: int, size: tuple[int, ...], train: bool) -> float:
    """FLOPs of one step of our VNet (= MONAI's: same convolutions), counted on the meta device."""
    with torch.device("meta"):
        net = VNet()
        x = torch.empty(batch, 1, *size)
    counter = FlopCounterMode(display=False)
    with counter:
        if train:
            net(x).sum().backward()
        else:
            with torch.no_grad():
                net(x)
    return float(counter.get_total_flops())


def cpu_peak_mib(step: Callable[[], None]) -> float | None:
    """Peak of live tensor bytes (MiB above the level at the start) during ``step``, from profiler events."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    try:  # the allocation events of the kineto results: not a documented API, so fail soft
        events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
        events.sort(key=lambda e: e.start_ns())
    except AttributeError:
        return None
    live = peak = 0
    for event in events:
        live += event.nbytes()
        peak = max(peak, live)
    return peak / MIB


def device_peak_mib(device: torch.device, step: Callable[[], None]) -> float | None:
    """Peak allocated MiB above the level at the start of one step on an accelerator (CUDA, NPU)."""
    synchronize(device)
    base = torch.accelerator.memory_allocated(device)
    torch.accelerator.reset_peak_memory_stats(device)
    step()
    synchronize(device)
    peak = max_memory_allocated(device)
    return None if peak is None else (peak - base) / MIB


def make_step(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, train: bool, dtype: torch.dtype | None,
              device: torch.device) -> Callable[[], None]:
    """A closure running one training step or one inference forward."""
    loss_fn = torch.nn.CrossEntropyLoss()
    use_amp = dtype is not None
    if train:
        net.train()
        optimizer = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE)
        scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            with autocast(device, enabled=use_amp, dtype=dtype):
                loss = loss_fn(net(x), y)
            if scaler is None:
                loss.backward()
                optimizer.step()
            else:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()

        return step
    net.eval()

    def infer() -> None:
        with torch.no_grad(), autocast(device, enabled=use_amp, dtype=dtype):
            net(x)

    return infer


def _without_fusion(step: Callable[[], None]) -> Callable[[], None]:
    """``step`` with ``networks.fused`` switched off (its environment variable) while it runs."""

    def run() -> None:
        old = os.environ.get(fused.ENV_DISABLE)
        os.environ[fused.ENV_DISABLE] = "1"
        try:
            step()
        finally:
            if old is None:
                del os.environ[fused.ENV_DISABLE]
            else:
                os.environ[fused.ENV_DISABLE] = old

    return run


def bench_setting(args: argparse.Namespace, device: torch.device, mode: str, dtype_name: str,
                  peaks: dict[str, float]) -> list[Result]:
    """Both models in one setting, steps interleaved; returns one Result per model."""
    torch.manual_seed(0)
    monai_net = MonaiVNet(spatial_dims=3, in_channels=1, out_channels=2, act="prelu", bias=True)
    ours = VNet()
    ours.load_state_dict(monai_vnet_to_ours(monai_net.state_dict()))
    if args.compile:
        ours = torch.compile(ours)
    x = torch.randn(args.batch, 1, *args.size, device=device)
    y = torch.randint(0, 2, (args.batch, *args.size), device=device)
    train = mode == "train"
    dtype = DTYPES[dtype_name]
    steps = {name: make_step(net.to(device), x, y, train, dtype, device)
             for name, net in (("monai", monai_net), ("ours", ours))}
    if args.unfused and train:  # inference never runs the fused kernels: nothing to compare there
        unfused = VNet()
        unfused.load_state_dict(monai_vnet_to_ours(monai_net.state_dict()))
        steps["unfused"] = _without_fusion(make_step(unfused.to(device), x, y, train, dtype, device))
    peak_mib: dict[str, float | None] = {}
    for name, step in steps.items():  # warm-up; the last warm-up step also measures memory
        start = time.perf_counter()
        for _ in range(args.warmup - 1):
            step()
        peak_mib[name] = cpu_peak_mib(step) if device.type == "cpu" else device_peak_mib(device, step)
        print(f"  {mode} {dtype_name} {name}: warm-up {time.perf_counter() - start:.1f} s", flush=True)
    wall: dict[str, list[float]] = {name: [] for name in steps}
    cpu: dict[str, list[float]] = {name: [] for name in steps}
    for i in range(args.steps):
        for name in (list(steps) if i % 2 == 0 else list(steps)[::-1]):
            synchronize(device)
            start, start_cpu = time.perf_counter(), time.process_time()
            steps[name]()
            synchronize(device)
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    flops = count_flops(args.batch, tuple(args.size), train)
    results = []
    for name in steps:
        median = statistics.median(wall[name])
        # paired: steps i of both models ran back to back, so they saw about the same background load
        ratio = statistics.median([m / o for m, o in zip(wall["monai"], wall[name])])
        cpu_ratio = statistics.median([m / o for m, o in zip(cpu["monai"], cpu[name])])
        results.append(Result(model=name, mode=mode, dtype=dtype_name, median_s=median,
                              cpu_median_s=statistics.median(cpu[name]), samples_per_s=args.batch / median,
                              peak_mib=peak_mib[name], flops=flops, mfu=flops / median / peaks[dtype_name],
                              ratio=ratio, cpu_ratio=cpu_ratio))
    return results


def _report(results: list[Result], peaks: dict[str, float]) -> None:
    print("peak matmul: " + ", ".join(f"{k} {v / 1e9:.1f} GFLOP/s" for k, v in peaks.items()))
    header = f"{'mode':5s} {'dtype':5s} {'model':7s} {'s/step':>7s} {'samples/s':>9s} {'peak MiB':>9s} {'GFLOP':>7s} " \
             f"{'MFU':>6s} {'ours/MONAI':>10s} {'(cpu time)':>10s}"
    print(header)
    for r in results:
        peak = "n/a" if r.peak_mib is None else f"{r.peak_mib:.0f}"
        print(f"{r.mode:5s} {r.dtype:5s} {r.model:7s} {r.median_s:7.3f} {r.samples_per_s:9.3f} {peak:>9s} "
              f"{r.flops / 1e9:7.1f} {r.mfu:6.1%} {r.ratio:10.3f} {r.cpu_ratio:10.3f}")


def main(argv: list[str] | None = None) -> list[Result]:
    """Run the benchmark; prints a table and returns the results."""
    args = _parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = setup_device(args.device)
    print(f"device {describe(device)}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"batch {args.batch}, size {tuple(args.size)}, warm-up {args.warmup}, steps {args.steps}", flush=True)
    if args.dtypes is None:
        args.dtypes = default_dtypes(device)
        if "bf16" not in args.dtypes:
            print("bf16 left out: this CPU has no native bf16 (oneDNN emulates it, ~300x slower than fp32); "
                  "--dtypes fp32 bf16 times it anyway", flush=True)
    peaks = {name: matmul_peak(device, dtype or torch.float32) for name, dtype in DTYPES.items() if name in args.dtypes}
    results: list[Result] = []
    for dtype_name in args.dtypes:
        for mode in args.modes:
            results += bench_setting(args, device, mode, dtype_name, peaks)
            _report(results[-2:], {dtype_name: peaks[dtype_name]})
            sys.stdout.flush()
    print("\nall settings:")
    _report(results, peaks)
    if args.reference_fps:
        print(f"\nFPS (batch {args.batch} x 1 device / median step time), reference = {args.reference_fps}:")
        for r in results:
            if r.mode == "train":
                print(f"  {r.model:7s} {r.dtype:4s} FPS {r.samples_per_s:8.2f}  x reference "
                      f"{r.samples_per_s / args.reference_fps:6.2f}")
    if args.json:
        tmp = args.json.with_name(args.json.name + f".tmp{os.getpid()}")
        tmp.write_text(json.dumps([asdict(r) for r in results], indent=1))
        tmp.replace(args.json)
    return results


if __name__ == "__main__":
    main()
