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

from pipeline.errors import cause_message
from transforms.errors import InputError

__all__ = ["CONFIGS_DIR_NAME", "bundle_dir", "bundle_root", "config_file", "load_config", "load_config_dicts", "parsed",
           "root_of_config"]

CONFIGS_DIR_NAME = "configs"
_PACKAGE_DIR = Path(__file__).resolve().parent
#: the copy of the bundle that ``pip install .`` puts inside the package (read-only: outputs never go there)
_INSTALLED_BUNDLE = _PACKAGE_DIR / "bundle"
#: a checkout (or an editable install) has the bundle beside the packages
_BUNDLE_CANDIDATES = (_PACKAGE_DIR.parent / "bundle", _INSTALLED_BUNDLE)


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
    """The bundle root of a config file, by MONAI's rule: the folder above ``configs/``, else the config's folder.

    For the copy of the bundle installed inside the package (``pip install .``) it is the working directory instead:
    models and outputs do not belong in site-packages.
    """
    folder = Path(path).parent
    root = folder.parent if folder.name == CONFIGS_DIR_NAME else folder
    return Path(".") if root.resolve() == _INSTALLED_BUNDLE.resolve() else root


def bundle_root(default: str = ".") -> str:
    """The root of the bundle whose configs ``python -m monai.bundle run`` is running (the configs' ``bundle_root``).

    MONAI's ``ConfigWorkflow`` knows which folder it read the configs from (``config_root_path``: it finds
    ``metadata.json`` and ``logging.conf`` there and puts the bundle root on ``sys.path`` before ``run``) but does not
    pass it to the configs. This finds the running workflow on the call stack and applies MONAI's rule, so
    ``--config_file bundle/configs/train.json`` from the repository root gives ``bundle``, ``configs/train.json`` from
    inside the bundle ``.``, an absolute path that bundle's absolute root; the copy installed inside the package gives
    the working directory (:func:`root_of_config`). ``--bundle_root DIR`` overrides it.

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
                return str(root_of_config(Path(workflow.config_root_path) / "any.json"))
            frame = frame.f_back
    finally:
        del frame
    return default


def _paths(config: str | os.PathLike | Sequence[str | os.PathLike], expected: str) -> list[Path]:
    paths = [Path(c) for c in ([config] if isinstance(config, (str, os.PathLike)) else config)]
    if not paths:
        raise InputError(f"no bundle config given (expected e.g. {config_file(expected)})")
    for path in paths:
        if not path.is_file():
            raise InputError(f"config '{path}' does not exist (expected a bundle config such as {config_file(expected)}"
                             " and its overlays)")
    return paths


def load_config(config: str | os.PathLike | Sequence[str | os.PathLike],
                overrides: Mapping[str, Any] | None = None, expected: str = "inference.json") -> Any:
    """A MONAI ``ConfigParser`` over one config or several (later files override earlier ones, like bundle overlays).

    ``bundle_root`` is the first file's bundle (:func:`root_of_config`) unless ``overrides`` sets it; ``overrides``
    (``{"vox_spacing": 2.0, "network_def#init_filters": 8}``) are applied last, as ``--key value`` on MONAI's
    command line would be. ``expected`` names the bundle config that error messages suggest.

    Raises:
        InputError: a file is missing or is not a readable config.
    """
    from monai.bundle import ConfigParser

    paths = _paths(config, expected)
    parser = ConfigParser()
    try:
        parser.read_config([str(p) for p in paths])
    except ValueError as e:  # JSON / YAML syntax errors
        raise InputError(f"config {', '.join(map(str, paths))} cannot be read: {str(e).splitlines()[0]}") from e
    parser["bundle_root"] = str(root_of_config(paths[0]))
    for key, value in (overrides or {}).items():
        parser[key] = value
    return parser


def load_config_dicts(configs: Sequence[Mapping[str, Any]], overrides: Mapping[str, Any] | None = None,
                      bundle_root: str = ".") -> Any:
    """A MONAI ``ConfigParser`` over config contents (later ones override earlier ones), e.g. the configs stored
    inside a TorchScript model; ``bundle_root`` (default: the working directory) and ``overrides`` applied last."""
    from monai.bundle import ConfigParser
    from monai.bundle.utils import merge_kv

    merged = ConfigParser(config={})
    for config in configs:  # as MONAI merges config files (ConfigParser.load_config_files)
        for key, value in config.items():
            merge_kv(merged, key, value)
    parser = ConfigParser()
    parser.read_config(merged.get())
    parser["bundle_root"] = bundle_root
    for key, value in (overrides or {}).items():
        parser[key] = value
    return parser


def parsed(parser: Any, key: str, config_name: str, **kwargs: Any) -> Any:
    """``parser.get_parsed_content(key)``, with a bad value in the config as one :class:`InputError` line.

    MONAI wraps any failure while building a component (a wrong type, an out-of-range value) in a multi-line
    ``RuntimeError``; the message here names the config and the key, then the cause.
    """
    try:
        return parser.get_parsed_content(key, **kwargs)
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure to build from the config is the config's value at fault
        raise InputError(f"{config_name}: '{key}' cannot be built from the config: {cause_message(e)}") from e
