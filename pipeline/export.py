"""``python -m pipeline export ...``: MONAI's ``ckpt_export`` / ``onnx_export``, written atomically.

MONAI writes the exported file directly under its final name, so a kill during the (slow) export
leaves a truncated ``model.ts``. This command runs the same MONAI command into a temporary name in the
target's folder and renames it into place only when it succeeded. Arguments are MONAI's, e.g.::

    python -m pipeline export ckpt_export network_def --filepath bundle/models/model.ts \\
        --ckpt_file bundle/models/model.pt --meta_file bundle/configs/metadata.json \\
        --config_file bundle/configs/inference.json --bundle_root bundle
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from transforms.errors import InputError

__all__ = ["COMMANDS", "export"]

COMMANDS = ("ckpt_export", "onnx_export")


def export(command: str, args: list[str]) -> Path:
    """Run ``python -m monai.bundle <command> <args>`` into a temporary file, then rename it to ``--filepath``.

    Raises:
        InputError: unknown command, no ``--filepath``, or the MONAI command failed (its last line is quoted).
    """
    if command not in COMMANDS:
        raise InputError(f"export command must be one of {', '.join(COMMANDS)}, got {command!r}")
    args = list(args)
    try:
        i = args.index("--filepath")
        target = Path(args[i + 1])
    except (ValueError, IndexError):
        raise InputError("export needs --filepath <output file> (e.g. bundle/models/model.ts)") from None
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = target.suffix or ".ts"
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    args[i + 1] = tmp
    try:
        proc = subprocess.run([sys.executable, "-m", "monai.bundle", command, *args], capture_output=True, text=True)
        if proc.returncode != 0 or os.path.getsize(tmp) == 0:
            lines = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
            raise InputError(f"{command} failed: {lines[-1] if lines else 'no output'}")
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    return target
