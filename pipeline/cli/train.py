"""``python -m pipeline train``: the reference's training arguments mapped onto bundle overrides.

There is one training path, the bundle (``bundle/configs/train.json``); this command only turns the
Ascend port's argument list into ``--key value`` overrides and runs it, so
``python -m pipeline train --data D --lr 1e-3 --nEpochs 2`` is
``python -m monai.bundle run training --config_file bundle/configs/train.json --dataset_dir D
--learning_rate 0.001 --epochs 2``. ``--print-overrides`` shows the mapping without running. Further
bundle overrides follow ``--``: ``python -m pipeline train --data D -- --vox_spacing 4.0``.

Multi-process: ``--distributed --device_num N`` relaunches itself under ``torchrun`` with N
processes on this node (the reference used ``mp.spawn``); for several nodes run
``torchrun --nnodes=M --nproc_per_node=N --rdzv_backend=c10d --rdzv_endpoint=HOST:PORT -m pipeline train
--distributed --device_num N --world_size M ...`` on every node. An argument given twice, an unknown one,
or two that contradict each other is a one-line error (exit status 2): the reference's own 1p script passes
``--lr`` twice and silently trains at the second value.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any, NoReturn

from pipeline.config import config_file
from pipeline.data.luna16 import SPLITS
from transforms.errors import InputError

__all__ = [
    "REFERENCE_ARGUMENTS",
    "add_parser",
    "bundle_overrides",
    "config_files",
    "parse_bundle_args",
    "run_train",
    "torchrun_command",
]

#: reference argument -> the bundle config id it sets (arguments that set no id say what they do instead)
REFERENCE_ARGUMENTS = {
    "--data": "dataset_dir",
    "--seed": "seed",
    "--workers": "num_workers",
    "--lr": "learning_rate",
    "--lr_decay": "lr_decay",
    "--weight_decay": "weight_decay",
    "--momentum": "optimizer#betas (Adam beta1; the reference lists it but ignores it)",
    "--nEpochs": "epochs",
    "--batchSz": "batch_size",
    "--device": "device_name",
    "--device_id": "device_id",
    "--amp": "amp (the level is the config's opt_level, O2, unless --opt-level says otherwise)",
    "--opt-level": "opt_level",
    "--loss-scale": "loss_scale",
    "--save": "ckpt_dir",
    "--resume": "resume (true, or 'auto'; + resume_ckpt when a path is given)",
    "--dist_backend": "dist_backend",
    "--distributed": "adds multi_gpu_train.json; relaunches under torchrun",
    "--device_num": "torchrun --nproc_per_node",
    "--world_size": "nodes; checked against torchrun's WORLD_SIZE",
}
DEVICE_ALIASES = {"gpu": "cuda"}
RESUME_AUTO = "auto"  # resume when the checkpoint exists (restarts by torchrun --max-restarts or a scheduler)
ADAM_BETA2 = 0.999
#: mapped one-to-one: argument dest -> bundle id
_DIRECT = {"seed": "seed", "workers": "num_workers", "lr": "learning_rate", "lr_decay": "lr_decay",
           "weight_decay": "weight_decay", "nEpochs": "epochs", "batchSz": "batch_size", "device_id": "device_id"}
MAX_SEED = 2**32 - 1  # numpy / monai.utils.set_determinism limit


class _TrainParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are :class:`InputError` (one line, exit status 2 in ``pipeline.cli``).

    argparse would print the usage block and exit from inside ``parse_args``; unknown options would
    even be reported by the top-level parser. Raising instead keeps every command-line error one line.
    """

    def error(self, message: str) -> NoReturn:
        raise InputError(f"train: {message} (see python -m pipeline train --help)")

    def parse_known_args(self, args=None, namespace=None):  # noqa: ANN001, ANN201 (argparse's signature)
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}; bundle overrides go after '--'")
        return namespace, extras


class _Once(argparse.Action):
    """Store a value, refusing a second occurrence of the same option."""

    def __call__(self, parser, namespace, values, option_string=None):  # noqa: D102
        seen = getattr(namespace, "_seen", set())
        if self.dest in seen:
            raise InputError(f"argument {option_string} given twice; give each argument once "
                             f"(the reference's train_full_1p.sh passes --lr twice and trains at the last value)")
        seen.add(self.dest)
        namespace._seen = seen
        setattr(namespace, self.dest, values)


class _OnceTrue(_Once):
    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):  # noqa: D102
        super().__call__(parser, namespace, True, option_string)


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``train`` sub-command (every argument of the reference's train.py)."""
    p = sub.add_parser("train", help="train with the reference's arguments (runs the bundle)",
                       description=__doc__.split("\n\n")[0], epilog="Reference argument -> bundle id: " + "; ".join(
                           f"{k} -> {v}" for k, v in REFERENCE_ARGUMENTS.items()))
    p.__class__ = _TrainParser  # sub.add_parser() has no class argument; see _TrainParser
    a = p.add_argument
    a("--data", action=_Once, help="LUNA16 root (the reference's --data; bundle: dataset_dir)")
    a("--seed", action=_Once, type=int, help="random seed; process r uses seed + r (reference default 1)")
    a("--workers", action=_Once, type=int, help="DataLoader workers (reference default 4)")
    a("--lr", action=_Once, type=float, help="Adam learning rate")
    a("--lr_decay", action=_Once, type=float, help="MultiStepLR gamma at epochs 50 and 100")
    a("--weight_decay", "--wd", action=_Once, type=float, help="Adam weight decay")
    a("--momentum", action=_Once, type=float, help="Adam beta1 (the reference lists --momentum 0.9 but ignores it)")
    a("--nEpochs", action=_Once, type=int, help="epochs")
    a("--batchSz", action=_Once, type=int, help="batch size per process (octants)")
    a("--device", action=_Once, choices=["auto", "cpu", "cuda", "gpu", "npu"], help="device (gpu = cuda)")
    a("--device_id", action=_Once, type=int, help="device index for 1-process training")
    a("--device_num", action=_Once, type=int, help="processes (devices) on this node; needs --distributed")
    a("--world_size", action=_Once, type=int, help="nodes (the reference's world_size); >1 needs torchrun --nnodes")
    a("--distributed", action=_OnceTrue, help="multi-process training (relaunches under torchrun)")
    a("--dist_backend", action=_Once, help="process-group backend for the device (nccl, hccl, gloo)")
    a("--amp", action=_OnceTrue, help="mixed precision")
    a("--opt-level", "--opt_level", dest="opt_level", action=_Once, choices=["O0", "O1", "O2"],
      help="apex-style level: O0 fp32, O1 autocast, O2 autocast + fp32 norms + loss scale")
    a("--loss-scale", "--loss_scale", dest="loss_scale", action=_Once, help="static scale (e.g. 128) or 'dynamic'")
    a("--save", action=_Once, help="checkpoint folder (vnet_checkpoint.pth.tar, vnet_model_best.pth.tar, model.pt)")
    a("--resume", action=_Once, nargs="?", const=True, default=None, metavar="PATH|auto",
      help="resume from <save>/vnet_checkpoint.pth.tar (which must exist), from PATH, or with 'auto' only if it exists")
    a("--split", action=_Once, choices=SPLITS,
      help="train/validation split (not a reference argument): reference = its 134 test scans against every other one "
           "(the reference-style scripts' default), subsets = official subset 9, hash = a stable hash split "
           "(bundle default: the config's split)")
    a("--config", action="append", default=None,
      help="extra bundle config overlay(s) applied after train.json (e.g. bundle/configs/quick.json)")
    a("--print-overrides", action="store_true", help="print the bundle command and exit")
    a("bundle_args", nargs="*", metavar="-- --KEY VALUE",
      help="bundle overrides after '--', e.g. -- --vox_spacing 4.0 --network_def#init_filters 8")
    p.set_defaults(func=run_train)
    return p


def parse_bundle_args(tokens: list[str]) -> dict[str, Any]:
    """``["--key", "value", ...]`` (what follows ``--``) -> ``{key: value}``.

    Values are read as Python literals where possible (``4.0``, ``[32,32,32]``, ``True``, ``None``), else
    kept as strings, as ``python -m monai.bundle run`` reads them.

    Raises:
        InputError: a token that is not ``--key`` followed by a value, or a key given twice.
    """
    out: dict[str, Any] = {}
    if len(tokens) % 2:
        raise InputError(f"bundle overrides after '--' must be '--key value' pairs, got {shlex.join(tokens)!r}")
    for key, value in zip(tokens[::2], tokens[1::2]):
        name = key[2:]
        if not key.startswith("--") or not name or name.startswith("-"):
            raise InputError(f"bundle override {key!r}: expected '--key value' after '--' (e.g. --vox_spacing 4.0)")
        if name in out:
            raise InputError(f"bundle override --{name} given twice; give each override once")
        try:
            out[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[name] = value
    return out


def _loss_scale(value: str | None) -> Any:
    if value is None:
        return None
    if value == "dynamic":
        return "dynamic"
    try:
        scale = float(value)
    except ValueError:
        raise InputError(f"--loss-scale must be a positive number or 'dynamic', got {value!r}") from None
    if not scale > 0 or scale == float("inf"):
        raise InputError(f"--loss-scale must be a positive number or 'dynamic', got {value!r}")
    return scale


def _check_ranges(args: argparse.Namespace) -> None:
    """Numbers the reference would accept and then fail on (or silently misuse)."""
    checks = [
        ("lr", lambda v: v > 0, "a positive number"),
        ("lr_decay", lambda v: v > 0, "a positive number (1 keeps the rate constant)"),
        ("weight_decay", lambda v: v >= 0, "zero or a positive number"),
        ("momentum", lambda v: 0 <= v < 1, "in [0, 1) (Adam's beta1)"),
        ("nEpochs", lambda v: v >= 1, "at least 1"),
        ("batchSz", lambda v: v >= 1, "at least 1"),
        ("workers", lambda v: v >= 0, "zero or more"),
        ("seed", lambda v: 0 <= v <= MAX_SEED, f"in [0, {MAX_SEED}]"),
        ("device_id", lambda v: v >= 0, "zero or more"),
        ("device_num", lambda v: v >= 1, "at least 1"),
        ("world_size", lambda v: v >= 1, "at least 1"),
    ]
    for dest, ok, expected in checks:
        value = getattr(args, dest)
        if value is not None and not ok(value):
            raise InputError(f"--{dest} must be {expected}, got {value}")


def _check_consistency(args: argparse.Namespace) -> None:
    """Arguments that contradict each other (the reference silently ignored one of them)."""
    if args.distributed and args.device_id is not None:
        raise InputError("--device_id selects one device for 1-process training; with --distributed each process"
                         " uses its LOCAL_RANK")
    if not args.distributed:
        for dest, given in (("device_num", args.device_num is not None and args.device_num > 1),
                            ("world_size", args.world_size is not None and args.world_size > 1),
                            ("dist_backend", args.dist_backend is not None)):
            if given:
                raise InputError(f"--{dest} needs --distributed (without it training runs in one process)")
    if not args.amp and (args.opt_level is not None or args.loss_scale is not None):
        raise InputError("--opt-level / --loss-scale need --amp (the reference ignores them without it)")
    if args.opt_level == "O0" and args.loss_scale is not None:
        raise InputError("--loss-scale has no effect with --opt-level O0 (fp32 training); drop one of them")
    if args.dist_backend is not None:
        from pipeline import device as devices

        device = DEVICE_ALIASES.get(args.device, args.device)
        if device in (None, "auto"):  # the device is only known at run time: check the names
            names = [part.split(":")[-1] for part in args.dist_backend.lower().split(",")]
            if not all(n in devices.BACKEND_DEVICES for n in names):
                raise InputError(f"--dist_backend {args.dist_backend!r}: expected one of "
                                 f"{', '.join(devices.BACKEND_DEVICES)}")
        else:
            devices.dist_backend(device, args.dist_backend)  # raises InputError naming the mismatch
    if args.world_size is not None and args.world_size > 1 and "LOCAL_RANK" not in os.environ:
        raise InputError(f"--world_size {args.world_size} (nodes): start this command on every node with torchrun"
                         f" --nnodes={args.world_size} --nproc_per_node=N --rdzv_backend=c10d"
                         " --rdzv_endpoint=HOST:PORT -m pipeline train ... (see the README)")
    if "LOCAL_RANK" in os.environ and args.distributed:  # launched by torchrun: its sizes must agree
        local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if args.device_num is not None and args.device_num != local:
            raise InputError(f"--device_num {args.device_num} but torchrun started {local} processes on this node")
        nodes = args.world_size or 1
        if args.world_size is not None and nodes * local != world:
            raise InputError(f"--world_size {nodes} x {local} processes per node != torchrun's WORLD_SIZE {world}")


def bundle_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Map parsed reference arguments (and the overrides after ``--``) onto bundle config ids.

    Returns:
        ``{bundle id: value}`` for the arguments given, then the ``--`` overrides.

    Raises:
        InputError: a bad value, contradictory arguments, or a ``--`` override of an id that a reference
            argument already sets.
    """
    _check_ranges(args)
    _check_consistency(args)
    o: dict[str, Any] = {}
    if args.data is not None:
        if not Path(args.data).is_dir():
            raise InputError(f"--data '{args.data}' is not a folder; expected a LUNA16 root "
                             "(make a synthetic one with: python -m pipeline synth data/synth --cases 8)")
        o["dataset_dir"] = str(args.data)
    for dest, key in _DIRECT.items():
        value = getattr(args, dest)
        if value is not None:
            o[key] = value
    if args.momentum is not None:
        o["optimizer#betas"] = [args.momentum, ADAM_BETA2]
    if args.device is not None:
        o["device_name"] = DEVICE_ALIASES.get(args.device, args.device)
    if args.amp:
        o["amp"] = args.opt_level != "O0"
        if args.opt_level is not None:
            o["opt_level"] = args.opt_level
    scale = _loss_scale(args.loss_scale)
    if scale is not None:
        o["loss_scale"] = scale
    if args.dist_backend is not None:
        o["dist_backend"] = args.dist_backend
    if args.split is not None:
        o["split"] = args.split
    if args.save is not None:
        o["ckpt_dir"] = str(args.save)
    if args.resume is not None:
        o["resume"] = "auto" if args.resume == RESUME_AUTO else True
        if args.resume not in (True, RESUME_AUTO):
            if not Path(args.resume).is_file():
                raise InputError(f"--resume '{args.resume}' is not a file; expected a vnet_checkpoint.pth.tar")
            o["resume_ckpt"] = str(args.resume)
    extra = parse_bundle_args(list(args.bundle_args or []))
    clash = sorted(set(o) & set(extra))
    if clash:
        raise InputError(f"bundle override --{clash[0]} after '--' contradicts the reference argument that sets it;"
                         " give it once")
    o.update(extra)
    return o


def config_files(args: argparse.Namespace) -> list[str]:
    """train.json, multi_gpu_train.json when distributed, then the ``--config`` overlays."""
    files = [str(config_file("train.json"))]
    if args.distributed or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        files.append(str(config_file("multi_gpu_train.json")))
    for extra in args.config or []:
        if not Path(extra).is_file():
            raise InputError(f"--config '{extra}' does not exist")
        files.append(str(extra))
    return files


def torchrun_command(nproc: int, argv: list[str]) -> list[str]:
    """The single-node ``torchrun`` command that reruns ``python -m pipeline <argv>`` in ``nproc`` processes."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
            f"--nproc_per_node={nproc}", "-m", "pipeline", *argv]


def run_train(args: argparse.Namespace) -> int:
    """Run the bundle's training with the mapped overrides (relaunching under torchrun if asked)."""
    overrides = bundle_overrides(args)
    files = config_files(args)
    if args.print_overrides:
        cmd = ["python", "-m", "monai.bundle", "run", "training", "--config_file", json.dumps(files)]
        for k, v in overrides.items():
            cmd += [f"--{k}", repr(v) if not isinstance(v, str) else v]
        print(shlex.join(cmd))
        return 0
    if args.distributed and "LOCAL_RANK" not in os.environ:
        cmd = torchrun_command(args.device_num or 1, sys.argv[1:])
        sys.stdout.flush()
        os.execv(sys.executable, cmd)
    from monai.bundle import run

    run("training", config_file=files, logging_file=str(config_file("logging.conf")), **overrides)
    return 0
