"""Benchmark (not a test): building the training cache with 1, 2 and 4 processes, side by side in one run.

Each setting forks N processes that form a gloo process group (as ``torchrun`` would) and build
``train#dataset`` of ``bundle/configs/train.json`` exactly as ``multi_gpu_train.json`` does
(``shard = @distributed``: each process preprocesses its share of the cases). Per setting it prints:

* cases per process, and the cache bytes each process holds in memory (tensor storage of its cache, the
  largest over the processes; the disk cache holds nothing in memory and reports the shared folder's size);
* the wall time to build the cache: from a barrier that all processes pass to the last one done;
* both as ratios to one process. With the memory cache the bytes per process fall as 1/N; the build time
  falls until the processes outnumber the cores (name the machine beside the figures).

    python benchmarks/shards.py                         # 8 default-size phantoms, 1 2 4 processes, memory cache
    python benchmarks/shards.py --cache disk --cases 16
    python benchmarks/shards.py --tiny --processes 1 2 --json   # smoke run; last line is a JSON object
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

__all__ = ["main", "run_setting"]

MB = 1e6
#: tiny: small phantoms on a 32^3 grid (as benchmarks/data.py --tiny)
TINY_OVERRIDES = {"vox_spacing": 1.6, "spatial_size": [32, 32, 32]}


def _worker(args: argparse.Namespace, rank: int, world: int, folder: Path, datalist: list[dict]) -> None:
    """One process of a setting: join the group, build the sharded training dataset, write what it holds."""
    import torch
    import torch.distributed as dist
    from data import build_dataset, cache_bytes

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    dist.init_process_group("gloo", store=dist.FileStore(str(folder / "store"), world), rank=rank, world_size=world)
    dist.barrier()
    start = time.perf_counter()
    overrides = {**(TINY_OVERRIDES if args.tiny else {}), "train#dataset#shard": True, "cache_workers": 1}
    dataset, _ = build_dataset(f"{args.cache}-int16", datalist, folder, overrides)
    own_s = time.perf_counter() - start
    dist.barrier()
    all_s = time.perf_counter() - start
    held = cache_bytes(dataset, folder / "cache") if args.cache == "memory" else 0
    record = {"rank": rank, "cases": len(dataset.data) if dataset.partitioned else len(datalist),
              "own_cases": len({dataset.volume_of(k) for k in range(len(dataset))}) if dataset.partitioned else None,
              "memory_bytes": held, "own_s": own_s, "all_s": all_s, "samples": len(dataset)}
    (folder / f"rank{rank}.json").write_text(json.dumps(record))
    dist.destroy_process_group()


def run_setting(processes: int, args: argparse.Namespace, work: Path, datalist: list[dict]) -> dict[str, Any]:
    """Fork ``processes`` workers (modules already imported) on the same cases; return their records and figures."""
    folder = work / f"p{processes}"
    folder.mkdir(parents=True)
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_worker, args=(args, r, processes, folder, datalist)) for r in range(processes)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    if any(p.exitcode for p in procs):
        raise SystemExit(f"{processes} processes: a worker failed (exit codes {[p.exitcode for p in procs]})")
    ranks = [json.loads((folder / f"rank{r}.json").read_text()) for r in range(processes)]
    disk = sum(f.stat().st_size for f in (folder / "cache").rglob("*.pt")) if args.cache == "disk" else 0
    return {"processes": processes, "cases_per_process": max(r["cases"] for r in ranks),
            "memory_mb_per_process": max(r["memory_bytes"] for r in ranks) / MB, "disk_mb": disk / MB,
            "build_s": max(r["all_s"] for r in ranks), "ranks": ranks}


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4], help="settings (default: 1 2 4)")
    parser.add_argument("--cases", type=int, default=8, help="synthetic training cases (default 8)")
    parser.add_argument("--cache", choices=("memory", "disk"), default="memory", help="train.json's cache")
    parser.add_argument("--tiny", action="store_true", help="small phantoms on a 32^3 grid (a smoke run)")
    parser.add_argument("--root", help="synthetic LUNA16 folder (default: a temporary one)")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the results")
    args = parser.parse_args(argv)
    if args.cases < 1 or min(args.processes) < 1:
        parser.error("--cases and --processes must be at least 1")
    if max(args.processes) > args.cases:
        parser.error(f"--processes {max(args.processes)} is more than --cases {args.cases}: some would hold nothing")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    from data import write_cases  # imports MONAI once; the workers are forked from this process
    from segment import cpu_name

    with tempfile.TemporaryDirectory(prefix="bench_shards_") as tmp:
        work = Path(tmp)
        datalist = write_cases(Path(args.root) if args.root else work / "luna16", args.cases, args.tiny)
        results = [run_setting(n, args, work, datalist) for n in args.processes]
    base = results[0]
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores; {args.cases} synthetic cases"
          f" ({'tiny, 32^3 grid' if args.tiny else 'default phantoms, train.json grid'}), cache: {args.cache}")
    print(f"{'processes':>9} | {'cases/process':>13} | {'memory MB/process':>17} | {'vs first':>8} |"
          f" {'build s (wall)':>14} | {'vs first':>8}")
    for r in results:
        base_mb = base["memory_mb_per_process"]
        mem_ratio = f"{r['memory_mb_per_process'] / base_mb:.2f}" if base_mb else "-"
        print(f"{r['processes']:>9} | {r['cases_per_process']:>13} | {r['memory_mb_per_process']:>17.1f} |"
              f" {mem_ratio:>8} | {r['build_s']:>14.2f} | {r['build_s'] / base['build_s']:>8.2f}")
    if args.cache == "disk":
        print(f"shared disk cache: {results[-1]['disk_mb']:.1f} MB, built once by all processes together")
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
