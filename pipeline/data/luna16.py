"""LUNA16 on disk: find cases, pair CT with lung mask, split train/validation, write MONAI datalists.

Three layouts are understood (all ``.mhd`` MetaImage files named ``<seriesuid>.mhd``):

- the reference's: ``ROOT/lung_ct_image/*.mhd`` + ``ROOT/seg-lungs-LUNA16/*.mhd`` (also what
  ``python -m pipeline synth ROOT`` writes);
- the reference's preprocessed output: ``ROOT/normalized_lung_ct/*.mhd`` + ``ROOT/normalized_lung_mask/*.mhd``
  (used when ``prefer_normalized=True`` and present);
- the official download: ``ROOT/subset0 .. subset9/*.mhd`` (a nested ``subsetN/subsetN/`` from unzipping
  is accepted) + ``ROOT/seg-lungs-LUNA16/*.mhd``; the subset number is kept for the official split.

Images and masks are paired by series uid (the file stem). The split (:func:`split_cases`) is the reference's
(its 134 test scans, :data:`REFERENCE_TEST_UIDS`, against every other scan), the official one (validation subset 9
by default), a hash split that is stable when files are added, or fixed uid lists. (About 420 lines: finding,
pairing and splitting work on the same case records, and every split is reached through :func:`build_datalist`.)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from transforms.errors import InputError

__all__ = [
    "IMAGE_DIR",
    "MASK_DIR",
    "NORMALIZED_IMAGE_DIR",
    "NORMALIZED_MASK_DIR",
    "DEFAULT_VAL_SUBSETS",
    "LUNA16_SCANS",
    "REFERENCE_TEST_UIDS",
    "SPLITS",
    "Case",
    "find_cases",
    "split_cases",
    "read_uid_file",
    "build_datalist",
    "write_datalist",
    "datalist",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

IMAGE_DIR = "lung_ct_image"
MASK_DIR = "seg-lungs-LUNA16"
NORMALIZED_IMAGE_DIR = "normalized_lung_ct"
NORMALIZED_MASK_DIR = "normalized_lung_mask"
IMAGE_SUFFIX = ".mhd"
SUBSET_PATTERN = re.compile(r"^subset(\d+)$")
DEFAULT_VAL_SUBSETS = (9,)
#: ``subsets``: official subsets (else a hash split); ``hash``: a hash split; ``reference``: the reference's test list
SPLITS = ("subsets", "hash", "reference")
#: the 134 series uids the reference tests on (shipped with this package); it trains on every other LUNA16 scan
REFERENCE_TEST_UIDS = Path(__file__).with_name("reference_test_uids.txt")
LUNA16_SCANS = 888  # CT scans in LUNA16 (subset0..9): the reference's 754 training + 134 test scans
SECTIONS = ("training", "validation")
UIDS_SHOWN = 3  # how many example uids an error message lists
HASH_BYTES = 8  # sha256 prefix used as a uniform number in [0, 1)

_LAYOUT_HELP = (
    "Expected one of these layouts:\n"
    f"  ROOT/{IMAGE_DIR}/<uid>.mhd + ROOT/{MASK_DIR}/<uid>.mhd                 (reference layout, synthetic data)\n"
    f"  ROOT/{NORMALIZED_IMAGE_DIR}/<uid>.mhd + ROOT/{NORMALIZED_MASK_DIR}/<uid>.mhd  (preprocessed)\n"
    f"  ROOT/subset0..subset9/<uid>.mhd + ROOT/{MASK_DIR}/<uid>.mhd            (official LUNA16 download)\n"
    "To make a small synthetic dataset in this layout: python -m pipeline synth ROOT --cases 8"
)


@dataclass(frozen=True)
class Case:
    """One CT with its lung mask.

    Attributes:
        uid: series instance uid (the file stem).
        image: absolute path of the CT ``.mhd``.
        label: absolute path of the mask ``.mhd``.
        subset: official LUNA16 subset number, or None outside the official layout.
    """

    uid: str
    image: str
    label: str
    subset: int | None = None


def _mhd_files(folder: Path) -> list[Path]:
    """``*.mhd`` directly in ``folder``, or in ``folder/<folder.name>`` (what unzipping often leaves)."""
    files = sorted(folder.glob(f"*{IMAGE_SUFFIX}"))
    nested = folder / folder.name
    if not files and nested.is_dir():
        files = sorted(nested.glob(f"*{IMAGE_SUFFIX}"))
    return files


def _by_uid(files: Iterable[tuple[Path, int | None]]) -> dict[str, tuple[Path, int | None]]:
    found: dict[str, tuple[Path, int | None]] = {}
    for path, subset in files:
        uid = path.name[: -len(IMAGE_SUFFIX)]
        if uid in found:
            raise InputError(f"series uid {uid!r} appears twice: '{found[uid][0]}' and '{path}'; keep one of them")
        found[uid] = (path, subset)
    return found


def _first(uids: Iterable[str]) -> str:
    uids = sorted(uids)
    more = ", ..." if len(uids) > UIDS_SHOWN else ""
    return ", ".join(uids[:UIDS_SHOWN]) + more


def _image_files(root: Path, prefer_normalized: bool) -> tuple[str, list[tuple[Path, int | None]], Path]:
    """Pick the layout: (description, [(image path, subset)], mask folder)."""
    normalized = root / NORMALIZED_IMAGE_DIR
    if prefer_normalized:
        files = _mhd_files(normalized) if normalized.is_dir() else []
        if files:
            return NORMALIZED_IMAGE_DIR, [(f, None) for f in files], root / NORMALIZED_MASK_DIR
        logger.warning("prefer_normalized: no '%s/*.mhd' under '%s'; using the raw CTs", NORMALIZED_IMAGE_DIR, root)
    reference_dir = root / IMAGE_DIR
    files = _mhd_files(reference_dir) if reference_dir.is_dir() else []
    if files:
        return IMAGE_DIR, [(f, None) for f in files], root / MASK_DIR
    subsets = sorted(
        (int(m.group(1)), d) for d in root.iterdir() if d.is_dir() and (m := SUBSET_PATTERN.match(d.name))
    )
    official = [(f, number) for number, folder in subsets for f in _mhd_files(folder)]
    return "subset*", official, root / MASK_DIR


def find_cases(root: PathLike, prefer_normalized: bool = False, allow_unpaired: bool = False) -> list[Case]:
    """Find the CT/mask pairs under a LUNA16 root.

    Args:
        root: dataset root in one of the layouts of this module's docstring.
        prefer_normalized: use ``normalized_lung_ct`` / ``normalized_lung_mask`` when present.
        allow_unpaired: skip CTs without a mask (with a warning) instead of raising.

    Returns:
        Cases sorted by uid. Masks without a CT are reported in a warning and ignored.

    Raises:
        InputError: root missing, no CT found, a uid twice, or CTs without a mask (unless ``allow_unpaired``).
    """
    root_path = Path(root).expanduser().resolve()
    if not root_path.is_dir():
        raise InputError(f"LUNA16 root '{root_path}' does not exist or is not a folder.\n{_LAYOUT_HELP}")
    layout, image_list, mask_dir = _image_files(root_path, prefer_normalized)
    if not image_list:
        looked = [IMAGE_DIR, "subset0..subset9"] + ([NORMALIZED_IMAGE_DIR] if prefer_normalized else [])
        raise InputError(
            f"no CT images (*.mhd) found under '{root_path}' (looked in: {', '.join(looked)}).\n{_LAYOUT_HELP}"
        )
    images = _by_uid(image_list)
    masks = _by_uid((f, None) for f in (_mhd_files(mask_dir) if mask_dir.is_dir() else []))
    no_mask = images.keys() - masks.keys()
    no_image = masks.keys() - images.keys()
    if no_mask or no_image:
        message = (
            f"unpaired files under '{root_path}' ({layout} + {mask_dir.name}): "
            f"{len(no_mask)} of {len(images)} CTs have no mask in '{mask_dir}'"
            + (f" (first: {_first(no_mask)})" if no_mask else "")
            + f"; {len(no_image)} masks have no CT"
            + (f" (first: {_first(no_image)})" if no_image else "")
            + ". Files are paired by series uid (file stem)."
        )
        if no_mask and not allow_unpaired:
            raise InputError(message + " Add the missing masks or pass allow_unpaired=True to skip those CTs.")
        warnings.warn(message + " Unpaired files are skipped.", stacklevel=2)
    paired = sorted(images.keys() & masks.keys())
    if not paired:
        raise InputError(f"no CT under '{root_path}' has a mask in '{mask_dir}'.\n{_LAYOUT_HELP}")
    return [Case(uid, str(images[uid][0]), str(masks[uid][0]), images[uid][1]) for uid in paired]


def read_uid_file(path: PathLike) -> list[str]:
    """Read a uid list: one uid per line, blank lines and ``#`` comments ignored.

    The last line is kept even without a trailing newline (the reference's ACL reader dropped it,
    evaluating 133 of 134 scans; docs/reference.md). Duplicates are dropped, order is kept.

    Raises:
        InputError: the file cannot be read.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise InputError(f"uid file '{path}' cannot be read: {err.strerror or err}") from err
    uids = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return list(dict.fromkeys(u for u in uids if u))


def _uid_set(value: PathLike | Iterable[str], name: str) -> tuple[set[str], str]:
    """A uid collection and how to name it in messages: a file path or an iterable of uids."""
    if isinstance(value, (str, os.PathLike)):
        return set(read_uid_file(value)), f"uid file '{value}' ({name})"
    return set(value), f"argument '{name}'"


def _hash_unit(seed: int, uid: str) -> float:
    """Uniform number in [0, 1) from sha256(f"{seed}:{uid}"): independent of PYTHONHASHSEED and of other uids."""
    digest = hashlib.sha256(f"{seed}:{uid}".encode()).digest()
    return int.from_bytes(digest[:HASH_BYTES], "big") / float(1 << (8 * HASH_BYTES))


def _split_by_lists(cases, train_uids, val_uids) -> tuple[list[Case], list[Case]]:
    known = {c.uid for c in cases}
    chosen: dict[str, set[str]] = {}
    for key, value in (("train_uids", train_uids), ("val_uids", val_uids)):
        if value is None:
            continue
        uids, source = _uid_set(value, key)
        unknown = uids - known
        if unknown:
            raise InputError(
                f"{source} names {len(unknown)} uids that are not in the dataset (first: {_first(unknown)}); "
                f"the dataset has {len(known)} cases"
            )
        chosen[key] = uids
    if "train_uids" in chosen and "val_uids" in chosen and chosen["train_uids"] & chosen["val_uids"]:
        both = chosen["train_uids"] & chosen["val_uids"]
        raise InputError(
            f"train_uids and val_uids share {len(both)} uids (first: {_first(both)}); they must be disjoint"
        )
    if "val_uids" in chosen:
        val = [c for c in cases if c.uid in chosen["val_uids"]]
        train = [c for c in cases if c.uid in chosen.get("train_uids", known - chosen["val_uids"])]
    else:
        train = [c for c in cases if c.uid in chosen["train_uids"]]
        val = [c for c in cases if c.uid not in chosen["train_uids"]]
    return train, val


def _split_by_hash(cases: Sequence[Case], val_fraction: float, seed: int) -> tuple[list[Case], list[Case]]:
    scores = {c.uid: _hash_unit(seed, c.uid) for c in cases}
    in_val = {uid for uid, score in scores.items() if score < val_fraction}
    if len(cases) >= 2 and not in_val:
        in_val = {min(scores, key=scores.__getitem__)}
    if len(cases) >= 2 and len(in_val) == len(cases):
        in_val.discard(max(scores, key=scores.__getitem__))
    return [c for c in cases if c.uid not in in_val], [c for c in cases if c.uid in in_val]


def _split_like_the_reference(cases: list[Case], uid_file: PathLike) -> tuple[list[Case], list[Case]]:
    """The reference's split: validation = the cases in its test list, training = every other case found."""
    path = Path(uid_file)
    if not path.is_file():
        raise InputError(f"split 'reference': the reference's test list '{path}' does not exist (it ships with the "
                         "package: reinstall it, or set the bundle key reference_test_uids to a copy)")
    listed = set(read_uid_file(path))
    val = [c for c in cases if c.uid in listed]
    train = [c for c in cases if c.uid not in listed]
    if not val:
        raise InputError(f"split 'reference': none of the {len(listed)} test uids of '{path}' is among the "
                         f"{len(cases)} cases found (first: {_first(c.uid for c in cases)}); this is not LUNA16: use "
                         "--split subsets or --split hash")
    if not train:
        raise InputError(f"split 'reference': all {len(cases)} cases found are reference test scans; nothing is left "
                         "to train on")
    logger.info(f"split 'reference': {len(cases)} of the {LUNA16_SCANS} LUNA16 scans found; validation = "
                f"{len(val)} of the {len(listed)} reference test scans, training = the other {len(train)} (the "
                f"reference trains on {LUNA16_SCANS - len(listed)})")
    return train, val


def split_cases(
    cases: Sequence[Case],
    val_fraction: float = 0.15,
    seed: int = 0,
    val_subsets: Iterable[int] | None = None,
    train_uids: PathLike | Iterable[str] | None = None,
    val_uids: PathLike | Iterable[str] | None = None,
    *,
    split: str = "subsets",
    reference_uids: PathLike = REFERENCE_TEST_UIDS,
) -> tuple[list[Case], list[Case]]:
    """Split cases into (train, validation), reproducibly.

    Fixed uid lists win; otherwise ``split`` decides:

    - ``train_uids`` / ``val_uids`` (a uid file, see :func:`read_uid_file`, or uids): given one list, the
      other side is every remaining case; given both, cases in neither are left out.
    - ``"reference"``: the reference's split: validation = the cases whose uid is in ``reference_uids`` (the
      reference's 134 test scans, shipped as :data:`REFERENCE_TEST_UIDS`), training = every other case found.
    - ``"subsets"``: when every case has an official subset, validation = cases in ``val_subsets`` (default
      subset 9); if the default subset is absent (partial download), or the layout has no subsets, the hash split.
    - ``"hash"`` (and ``"subsets"`` without subsets): each uid goes to validation when sha256(f"{seed}:{uid}")
      mapped to [0, 1) is below
      ``val_fraction``: adding cases never moves existing ones, and the result does not depend on
      PYTHONHASHSEED. (The original PyTorch V-Net shuffles a list built from a Python set, whose order
      depends on the per-process hash seed, so its split is not reproducible: docs/reference.md.) With two or
      more cases, each side gets at least one (lowest hash to validation, highest to training).

    Args:
        cases: from :func:`find_cases`.
        split: one of :data:`SPLITS`.
        reference_uids: the uid file of the ``"reference"`` split.
        val_fraction: expected validation share for the hash split, in (0, 1).
        seed: split seed for the hash split.
        val_subsets: official subsets used for validation (default ``(9,)``).
        train_uids: uid file path or uids for training.
        val_uids: uid file path or uids for validation.

    Returns:
        (train, val), each in the input order.

    Raises:
        InputError: unknown ``split``, bad ``val_fraction``, unknown or overlapping uids in the lists, explicit
            ``val_subsets`` that leave one side empty, or a reference split that finds none of its uids.
    """
    cases = list(cases)
    if split not in SPLITS:
        raise InputError(f"split {split!r}: expected one of {', '.join(SPLITS)}")
    if train_uids is not None or val_uids is not None:
        return _split_by_lists(cases, train_uids, val_uids)
    if split == "reference":
        return _split_like_the_reference(cases, reference_uids)
    if not 0.0 < val_fraction < 1.0:
        raise InputError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    if split == "subsets" and cases and all(c.subset is not None for c in cases):
        chosen = set(DEFAULT_VAL_SUBSETS if val_subsets is None else val_subsets)
        train = [c for c in cases if c.subset not in chosen]
        val = [c for c in cases if c.subset in chosen]
        if train and val:
            return train, val
        present = sorted({c.subset for c in cases})
        if val_subsets is not None:
            raise InputError(
                f"val_subsets={sorted(chosen)} leaves the {'validation' if not val else 'training'} set empty; "
                f"the dataset has subsets {present}"
            )
        warnings.warn(
            f"validation subsets {sorted(chosen)} not downloaded (have {present}); using the seeded hash split",
            stacklevel=2,
        )
    return _split_by_hash(cases, val_fraction, seed)


def build_datalist(
    root: PathLike,
    val_fraction: float = 0.15,
    seed: int = 0,
    prefer_normalized: bool = False,
    val_subsets: Iterable[int] | None = None,
    train_uids: PathLike | Iterable[str] | None = None,
    val_uids: PathLike | Iterable[str] | None = None,
    allow_unpaired: bool = False,
    *,
    split: str = "subsets",
    reference_uids: PathLike = REFERENCE_TEST_UIDS,
) -> dict[str, list[dict[str, str]]]:
    """Find, pair and split a LUNA16 root into a MONAI decathlon-style datalist.

    Returns:
        ``{"training": [...], "validation": [...]}``, items ``{"image": abs path, "label": abs path, "uid": uid}``.

    Raises:
        InputError: see :func:`find_cases` and :func:`split_cases`.
    """
    cases = find_cases(root, prefer_normalized=prefer_normalized, allow_unpaired=allow_unpaired)
    train, val = split_cases(cases, val_fraction, seed, val_subsets, train_uids, val_uids, split=split,
                             reference_uids=reference_uids)

    def items(selected: list[Case]) -> list[dict[str, str]]:
        return [{"image": c.image, "label": c.label, "uid": c.uid} for c in selected]

    return {"training": items(train), "validation": items(val)}


def write_datalist(path: PathLike, datalist: dict[str, list[dict[str, str]]]) -> Path:
    """Write a datalist as JSON, atomically (temporary file in the same folder, then rename).

    Returns:
        The path written.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            json.dump(datalist, stream, indent=2)
            stream.write("\n")
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def datalist(root: PathLike, section: str = "training", **kwargs) -> list[dict[str, str]]:
    """One section of :func:`build_datalist`; what bundle configs call.

    Example (bundle config)::

        "$pipeline.data.luna16.datalist(@dataset_dir, 'training', val_fraction=@val_fraction, seed=@split_seed)"

    Args:
        root: dataset root.
        section: ``"training"`` or ``"validation"``.
        kwargs: passed to :func:`build_datalist`.

    Raises:
        InputError: unknown section, or see :func:`build_datalist`.
    """
    if section not in SECTIONS:
        raise InputError(f"section must be one of {SECTIONS}, got {section!r}")
    return build_datalist(root, **kwargs)[section]
