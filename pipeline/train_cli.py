"""``python -m pipeline train``: the seed's training arguments mapped onto bundle overrides.

There is one training path, the bundle (``bundle/configs/train.json``); this command only turns the
Ascend port's argument list into ``--key value`` overrides and runs it, so
``python -m pipeline train --data D --lr 1e-3 --nEpochs 2`` is
``python -m monai.bundle run training --config_file bundle/configs/train.json --dataset_dir D
--learning_rate 0.001 --epochs 2``. ``--print-overrides`` shows the mapping without running.

Multi-process: ``--distributed --device_num N`` relaunches itself under ``torchrun`` with N
processes on this node (the seed used ``mp.spawn``); for several nodes call ``torchrun`` yourself
(see the README). An argument given twice is an error (the seed's own 1p script passes ``--lr``
twice and silently trains at the second value).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transforms.errors import InputError

__all__ = ["add_parser", "bundle_overrides", "config_files", "run_train"]

BUNDLE_CONFIG_DIR = Path(__file__).resolve().parent.parent / "bundle" / "configs"


class _Once(argparse.Action):
    """Store a value, refusing a second occurrence of the same option."""

    def __call__(self, parser, namespace, values, option_string=None):  # noqa: D102
        seen = getattr(namespace, "_seen", set())
        if self.dest in seen:
            raise InputError(f"argument {option_string} given twice; give each argument once "
                             f"(the seed's train_full_1p.sh passes --lr twice and trains at the last value)")
        seen.add(self.dest)
        namespace._seen = seen
        setattr(namespace, self.dest, values)


class _OnceTrue(_Once):
    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):  # noqa: D102
        super().__call__(parser, namespace, True, option_string)


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``train`` sub-command (every argument of the seed's train.py)."""
    p = sub.add_parser("train", help="train with the seed's arguments (runs the bundle)", description=__doc__.split("\n\n")[0])
    a = p.add_argument
    a("--data", action=_Once, required=False, help="LUNA16 root (the seed's --data; bundle: dataset_dir)")
    a("--seed", action=_Once, type=int, help="random seed (seed default 1)")
    a("--workers", action=_Once, type=int, help="DataLoader workers (seed default 4)")
    a("--lr", action=_Once, type=float, help="Adam learning rate")
    a("--lr_decay", action=_Once, type=float, help="MultiStepLR gamma at epochs 50 and 100")
    a("--weight_decay", "--wd", action=_Once, type=float, help="Adam weight decay")
    a("--momentum", action=_Once, type=float, help="Adam beta1 (the seed lists --momentum 0.9 but ignores it)")
    a("--nEpochs", action=_Once, type=int, help="epochs")
    a("--batchSz", action=_Once, type=int, help="batch size per process (octants)")
    a("--device", action=_Once, choices=["auto", "cpu", "cuda", "gpu", "npu"], help="device (gpu = cuda)")
    a("--device_id", action=_Once, type=int, help="device index for 1-process training")
    a("--device_num", action=_Once, type=int, help="processes (devices) on this node")
    a("--world_size", action=_Once, type=int, help="nodes (the seed's world_size; use torchrun --nnodes)")
    a("--distributed", action=_OnceTrue, help="multi-process training (relaunches under torchrun)")
    a("--dist_backend", action=_Once, help="process-group backend for the device (nccl, hccl, gloo)")
    a("--amp", action=_OnceTrue, help="mixed precision")
    a("--opt-level", "--opt_level", dest="opt_level", action=_Once, choices=["O0", "O1", "O2"],
      help="apex-style level: O0 fp32, O1 autocast, O2 autocast + fp32 norms + loss scale")
    a("--loss-scale", "--loss_scale", dest="loss_scale", action=_Once, help="static scale (e.g. 128) or 'dynamic'")
    a("--save", action=_Once, help="checkpoint folder (vnet_checkpoint.pth.tar, vnet_model_best.pth.tar, model.pt)")
    a("--resume", action=_OnceTrue, help="resume from <save>/vnet_checkpoint.pth.tar")
    a("--config", action="append", default=None,
      help="extra bundle config overlay(s) applied after train.json (e.g. bundle/configs/quick.json)")
    a("--print-overrides", action="store_true", help="print the bundle command and exit")
    p.set_defaults(func=run_train)
    return p


def _loss_scale(value: str | None) -> Any:
    if value is None:
        return None
    if value == "dynamic":
        return "dynamic"
    try:
        scale = float(value)
    except ValueError:
        raise InputError(f"--loss-scale must be a positive number or 'dynamic', got {value!r}") from None
    if scale <= 0:
        raise InputError(f"--loss-scale must be a positive number or 'dynamic', got {value!r}")
    return scale


def bundle_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Map parsed seed arguments onto bundle config ids (only those given)."""
    o: dict[str, Any] = {}
    if args.data is not None:
        if not Path(args.data).is_dir():
            raise InputError(f"--data '{args.data}' is not a folder; expected a LUNA16 root "
                             "(make a synthetic one with: python -m pipeline synth data/synth --cases 8)")
        o["dataset_dir"] = str(args.data)
    mapping = {"seed": "seed", "workers": "num_workers", "lr": "learning_rate", "lr_decay": "lr_decay",
               "weight_decay": "weight_decay", "nEpochs": "epochs", "batchSz": "batch_size", "device_id": "device_id"}
    for arg, key in mapping.items():
        value = getattr(args, arg)
        if value is not None:
            o[key] = value
    for arg in ("lr", "weight_decay", "nEpochs", "batchSz", "workers"):
        value = getattr(args, arg)
        if value is not None and value < 0 or (arg in ("nEpochs", "batchSz") and value is not None and value < 1):
            raise InputError(f"--{arg} must be positive, got {value}")
    if args.momentum is not None:
        o["optimizer#betas"] = [args.momentum, 0.999]
    if args.device is not None:
        o["device_name"] = "cuda" if args.device == "gpu" else args.device
    if args.amp:
        o["amp"] = True
        o["opt_level"] = args.opt_level or "O2"
        if args.opt_level == "O0":
            o["amp"] = False
    elif args.opt_level is not None or args.loss_scale is not None:
        raise InputError("--opt-level / --loss-scale need --amp (the seed ignores them without it)")
    scale = _loss_scale(args.loss_scale)
    if scale is not None:
        o["loss_scale"] = scale
    if args.dist_backend is not None:
        o["dist_backend"] = args.dist_backend
    if args.save is not None:
        o["ckpt_dir"] = str(args.save)
    if args.resume:
        o["resume"] = True
    if args.distributed and args.device_id is not None:
        raise InputError("--device_id selects one device for 1-process training; with --distributed each process"
                         " uses LOCAL_RANK")
    return o


def config_files(args: argparse.Namespace) -> list[str]:
    files = [str(BUNDLE_CONFIG_DIR / "train.json")]
    if args.distributed or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        files.append(str(BUNDLE_CONFIG_DIR / "multi_gpu_train.json"))
    for extra in args.config or []:
        if not Path(extra).is_file():
            raise InputError(f"--config '{extra}' does not exist")
        files.append(str(extra))
    return files


def run_train(args: argparse.Namespace) -> int:
    """Run the bundle's training with the mapped overrides (relaunching under torchrun if asked)."""
    overrides = bundle_overrides(args)
    files = config_files(args)
    if args.print_overrides:
        cmd = ["python", "-m", "monai.bundle", "run", "training", "--config_file", repr(files)]
        for k, v in overrides.items():
            cmd += [f"--{k}", repr(v) if not isinstance(v, str) else v]
        print(shlex.join(cmd))
        return 0
    nproc = args.device_num or 1
    if args.distributed and "LOCAL_RANK" not in os.environ:
        if nproc < 1:
            raise InputError(f"--device_num must be at least 1, got {nproc}")
        argv = [a for a in sys.argv[1:]]
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
               f"--nproc_per_node={nproc}", "-m", "pipeline", *argv]
        os.execv(sys.executable, cmd)
    from monai.bundle import run

    run("training", config_file=files, logging_file=str(BUNDLE_CONFIG_DIR / "logging.conf"), **overrides)
    return 0
