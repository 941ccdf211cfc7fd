"""``python -m pipeline export ckpt_export|onnx_export ...``: MONAI's export commands, written atomically."""

from __future__ import annotations

import argparse

__all__ = ["REFERENCE_USAGE", "add_parser"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    from pipeline import export

    p = sub.add_parser("export", help="MONAI ckpt_export / onnx_export written atomically; the reference's format",
                       description=(export.__doc__ or "").split("\n\n")[0])
    p.add_argument("command", choices=export.COMMANDS)
    p.add_argument("args", nargs=argparse.REMAINDER, help="the MONAI command's arguments (with --filepath); for "
                   "reference: --ckpt_file FILE --filepath FILE [--data-parallel]")
    p.set_defaults(func=_run)


REFERENCE_USAGE = ("usage: python -m pipeline export reference --ckpt_file FILE --filepath FILE [--data-parallel]\n"
                   "write FILE's weights (model.pt, our checkpoint or the reference's) in the reference's checkpoint "
                   "format {epoch, state_dict, error}; --data-parallel prefixes the keys with 'module.'")


def _run(args: argparse.Namespace) -> int:
    from pipeline.export import export

    if args.command == "reference" and {"-h", "--help"} & set(args.args):
        print(REFERENCE_USAGE)
        return 0
    print(f"exported {export(args.command, args.args)}")
    return 0
