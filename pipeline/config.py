"""The MONAI bundle from Python: where it is, which folder a run writes to, and reading its configs.

The bundle (``bundle/configs/*.json``) is the one home of every hyperparameter. The preprocess command, the segment
tool and evaluation do not keep defaults of their own: they read the bundle config they are given with MONAI's
``ConfigParser`` (:func:`load_config`) and take their transforms, network and settings from it.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from transforms.errors import InputError

__all__ = ["CONFIGS_DIR_NAME", "bundle_dir", "bundle_root", "config_file", "load_config", "root_of_config"]

CONFIGS_DIR_NAME = "configs"
_PACKAGE_DIR = Path(__file__).resolve().parent
#: a checkout (or an editable install) has the bundle beside the packages; ``pip install .`` puts a copy inside
_BUNDLE_CANDIDATES = (_PACKAGE_DIR.parent / "bundle", _PACKAGE_DIR / "bundle")


def bundle_dir() -> Path:
    """The bundle shipped with this code: the repository's ``bundle/``, or the copy installed with the package.

    Raises:
        InputError: neither exists (a broken installation).
    """
    for candidate in _BUNDLE_CANDIDATES:
        if (candidate / CONFIGS_DIR_NAME / "inference.json").is_file():
            return candidate
    raise InputError(f"the bundle's configs were not found in {' or '.join(map(str, _BUNDLE_CANDIDATES))}: "
                     "reinstall the package (pip install .) or run from a checkout of the repository")


def config_file(name: str) -> Path:
    """``<bundle>/configs/<name>`` of the bundle shipped with this code (see :func:`bundle_dir`)."""
    return bundle_dir() / CONFIGS_DIR_NAME / name


def root_of_config(path: str | os.PathLike) -> Path:
    """The bundle root of a config file, by MONAI's rule: the folder above ``configs/``, else the config's folder."""
    folder = Path(path).parent
    return folder.parent if folder.name == CONFIGS_DIR_NAME else folder


def bundle_root(default: str = ".") -> str:
    """The root of the bundle whose configs ``python -m monai.bundle run`` is running (the configs' ``bundle_root``).

    MONAI's ``ConfigWorkflow`` knows which folder it read the configs from (``config_root_path``: it finds
    ``metadata.json`` and ``logging.conf`` there and puts the bundle root on ``sys.path`` before ``run``) but does not
    pass it to the configs. This finds the running workflow on the call stack and applies MONAI's rule, so
    ``--config_file bundle/configs/train.json`` from the repository root gives ``bundle``, ``configs/train.json`` from
    inside the bundle ``.``, an absolute path that bundle's absolute root. ``--bundle_root DIR`` overrides it.

    Args:
        default: the answer outside a running workflow (MONAI's ``ckpt_export`` and ``verify_net_in_out`` without
            ``--bundle_root``, which themselves default to the working directory).
    """
    from monai.bundle import ConfigWorkflow

    frame = inspect.currentframe()
    try:
        while frame is not None:
            workflow = frame.f_locals.get("self")
            if isinstance(workflow, ConfigWorkflow):
                folder = Path(workflow.config_root_path)
                return str(folder.parent if folder.name == CONFIGS_DIR_NAME else folder)
            frame = frame.f_back
    finally:
        del frame
    return default


def _paths(config: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    paths = [Path(c) for c in ([config] if isinstance(config, (str, os.PathLike)) else config)]
    if not paths:
        raise InputError("no bundle config given (expected e.g. bundle/configs/inference.json)")
    for path in paths:
        if not path.is_file():
            raise InputError(f"config '{path}' does not exist (expected a bundle config such as "
                             f"{config_file('inference.json')})")
    return paths


def load_config(config: str | os.PathLike | Sequence[str | os.PathLike],
                overrides: Mapping[str, Any] | None = None) -> Any:
    """A MONAI ``ConfigParser`` over one config or several (later files override earlier ones, like bundle overlays).

    ``bundle_root`` is the first file's bundle (:func:`root_of_config`) unless ``overrides`` sets it; ``overrides``
    (``{"vox_spacing": 2.0, "network_def#init_filters": 8}``) are applied last, as ``--key value`` on MONAI's
    command line would be.

    Raises:
        InputError: a file is missing or is not a readable config.
    """
    from monai.bundle import ConfigParser

    paths = _paths(config)
    parser = ConfigParser()
    try:
        parser.read_config([str(p) for p in paths])
    except ValueError as e:  # JSON / YAML syntax errors
        raise InputError(f"config {', '.join(map(str, paths))} cannot be read: {str(e).splitlines()[0]}") from e
    parser["bundle_root"] = str(root_of_config(paths[0]))
    for key, value in (overrides or {}).items():
        parser[key] = value
    return parser
