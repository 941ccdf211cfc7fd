"""``python -m pipeline <command>`` and the ``vnet-lung`` console script: argument parsing and one-line errors only.

Commands:
    synth       write a synthetic LUNA16 (CT phantoms + lung masks in the reference's layout)
    preprocess  the reference's ``normalize_dataset ROOT VOX_SPACING Z_MAX Y_MAX X_MAX``
    train       the reference's training command line, mapped onto the bundle (one training path)
    segment     segment CTs into lungs in their own geometry
    export      MONAI's ckpt_export / onnx_export, written atomically

Expected errors (bad files or arguments) print one line, ``error: ...``, and exit with status 2;
``--debug`` shows the traceback instead. The work is done by the modules each command calls.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from pipeline.errors import install_excepthook, one_line
from transforms.errors import InputError

__all__ = ["CONSOLE_SCRIPT", "build_parser", "main"]

CONSOLE_SCRIPT = "vnet-lung"
DESCRIPTION = ("V-Net lung segmentation for chest CT on MONAI: synthetic data, the reference's preprocessing and "
               "training commands, lung segmentation of your own CTs, model export.")


def build_parser(prog: str = "python -m pipeline") -> argparse.ArgumentParser:
    """The parser of every command (each adds its own sub-parser)."""
    from pipeline.cli import export, preprocess, segment, synth, train

    parser = argparse.ArgumentParser(prog=prog, description=DESCRIPTION)
    parser.add_argument("--debug", action="store_true", help="show tracebacks for expected errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in (synth, preprocess, train, segment, export):
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m pipeline`` and ``vnet-lung``; returns the process exit status."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    install_excepthook()  # errors raised inside a bundle run started by `train` print one line too
    prog = CONSOLE_SCRIPT if Path(sys.argv[0]).name == CONSOLE_SCRIPT else "python -m pipeline"
    parser = build_parser(prog)
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        args = parser.parse_args(argv)
        return int(args.func(args) or 0)
    except (InputError, FileNotFoundError, NotADirectoryError, PermissionError) as e:
        if debug:
            raise
        msg = str(e) if isinstance(e, InputError) else f"{e.strerror or e}: '{e.filename}'"
        print(f"error: {one_line(msg)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
