"""The normalize_dataset command: outputs, skipping, parallelism, and one clear message per bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from pipeline.data.luna16 import NORMALIZED_IMAGE_DIR as OUTPUT_IMAGE_DIR
from pipeline.data.luna16 import NORMALIZED_MASK_DIR as OUTPUT_MASK_DIR
from pipeline.data.synthetic import generate_case, write_case
from pipeline.preprocess import preprocess_dataset
from transforms.errors import InputError

REPO = Path(__file__).resolve().parents[2]
SIZE = (32, 32, 32)  # (X, Y, Z)


def _case(root: Path, uid: str, seed: int = 0, shape=(48, 48, 24)):
    ct, mask, spacing, origin, direction = generate_case(seed, shape=shape)
    return write_case(root, uid, ct, mask, spacing, origin, direction)


def _write(path: Path, array: np.ndarray, spacing=(1.0, 1.0, 2.0), origin=(0.0, 0.0, 0.0)):
    img = sitk.GetImageFromArray(array)
    img.SetSpacing(spacing[: array.ndim])
    img.SetOrigin(origin[: array.ndim])
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path), True)


def _run(root, **kw):
    return {r.case: r for r in preprocess_dataset(root, 4.0, SIZE, workers=1, progress=False, **kw)}


def test_writes_resampled_cropped_volumes_and_skips_done_cases(tmp_path):
    _case(tmp_path, "1.2.3", seed=1)
    _case(tmp_path, "1.2.4", seed=3)  # seed % 4 == 3: a flipped direction
    results = _run(tmp_path)
    assert {r.status for r in results.values()} == {"done"}
    for uid in ("1.2.3", "1.2.4"):
        ct = sitk.ReadImage(str(tmp_path / OUTPUT_IMAGE_DIR / f"{uid}.mhd"))
        mask = sitk.ReadImage(str(tmp_path / OUTPUT_MASK_DIR / f"{uid}.mhd"))
        for img in (ct, mask):
            assert img.GetSize() == SIZE
            np.testing.assert_allclose(img.GetSpacing(), (4.0, 4.0, 4.0), atol=1e-6)
        assert ct.GetPixelID() == sitk.sitkInt16 and mask.GetPixelID() == sitk.sitkUInt8
        m = sitk.GetArrayFromImage(mask)
        assert set(np.unique(m)) == {0, 1} and m.sum() > 0
        assert sitk.GetArrayFromImage(ct).min() < -900  # still HU, not normalised (as the reference writes)
        assert mask.GetOrigin() == ct.GetOrigin() and mask.GetDirection() == ct.GetDirection()
    again = _run(tmp_path)
    assert {r.status for r in again.values()} == {"skipped"}
    assert {r.status for r in _run(tmp_path, overwrite=True).values()} == {"done"}


@pytest.mark.slow
def test_parallel_workers_give_the_same_files(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for root in (a, b):
        _case(root, "1.2.3", seed=1)
        _case(root, "1.2.5", seed=2)
    preprocess_dataset(a, 4.0, SIZE, workers=1, progress=False)
    preprocess_dataset(b, 4.0, SIZE, workers=2, progress=False)
    for sub in (OUTPUT_IMAGE_DIR, OUTPUT_MASK_DIR):
        for f in sorted((a / sub).glob("*.mhd")):
            x = sitk.GetArrayFromImage(sitk.ReadImage(str(f)))
            y = sitk.GetArrayFromImage(sitk.ReadImage(str(b / sub / f.name)))
            assert np.array_equal(x, y)


def _no_outputs_for(root: Path, uid: str) -> bool:
    return not any(any((root / d).glob(f"{uid}*")) for d in (OUTPUT_IMAGE_DIR, OUTPUT_MASK_DIR)) and not any(
        p.name.startswith(".") for d in (OUTPUT_IMAGE_DIR, OUTPUT_MASK_DIR) if (root / d).is_dir() for p in (root / d).iterdir()
    )


def _break_case(root: Path, kind: str) -> tuple[str, str]:
    """Make one broken case next to a good one; returns (uid, expected words in the message)."""
    _case(root, "1.0.good", seed=1)
    uid = "1.0.bad"
    img_dir, mask_dir = root / "lung_ct_image", root / "seg-lungs-LUNA16"
    if kind == "missing data file":
        ct, _ = _case(root, uid, seed=2)
        ct.with_suffix(".zraw").unlink()
        return uid, "data file"
    if kind == "truncated data":
        ct, _ = _case(root, uid, seed=2)
        raw = ct.with_suffix(".zraw")
        raw.write_bytes(raw.read_bytes()[:100])
        return uid, uid
    if kind == "corrupt header":
        _, mask = _case(root, uid, seed=2)
        (img_dir / f"{uid}.mhd").write_text("this is not a MetaImage header\n")
        return uid, "header"
    if kind == "2-D image":
        _write(img_dir / f"{uid}.mhd", np.full((40, 40), -500, np.int16))
        _write(mask_dir / f"{uid}.mhd", np.zeros((40, 40), np.uint8))
        return uid, "2-D"
    if kind == "size mismatch":
        _write(img_dir / f"{uid}.mhd", np.full((20, 40, 40), -500, np.int16))
        _write(mask_dir / f"{uid}.mhd", np.zeros((20, 40, 30), np.uint8))
        return uid, "size"
    if kind == "geometry mismatch":
        _write(img_dir / f"{uid}.mhd", np.full((20, 40, 40), -500, np.int16))
        _write(mask_dir / f"{uid}.mhd", np.zeros((20, 40, 40), np.uint8), origin=(5.0, 0.0, 0.0))
        return uid, "origin"
    if kind == "unexpected labels":
        ct = np.full((20, 40, 40), -800, np.int16)
        m = np.zeros((20, 40, 40), np.uint8)
        m[5:15, 5:20, 5:20] = 3
        m[5:15, 22:35, 22:35] = 7
        _write(img_dir / f"{uid}.mhd", ct)
        _write(mask_dir / f"{uid}.mhd", m)
        return uid, "7"
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind",
    ["missing data file", "truncated data", "corrupt header", "2-D image", "size mismatch", "geometry mismatch", "unexpected labels"],
)
def test_bad_case_is_reported_and_others_continue(tmp_path, kind):
    uid, words = _break_case(tmp_path, kind)
    results = _run(tmp_path)
    assert results["1.0.good"].status == "done"
    bad = results[uid]
    assert bad.status == "failed"
    assert "\n" not in bad.message and words in bad.message
    assert uid in bad.message or "1.0.bad" in bad.message
    assert _no_outputs_for(tmp_path, uid)


def test_image_without_mask_is_a_failure_that_names_it(tmp_path):
    _case(tmp_path, "1.0.good", seed=1)
    ct, mask = _case(tmp_path, "1.0.lonely", seed=2)
    mask.unlink()
    mask.with_suffix(".zraw").unlink()
    results = preprocess_dataset(tmp_path, 4.0, SIZE, workers=1, progress=False)
    assert any(r.status == "done" and r.case == "1.0.good" for r in results)
    failed = [r for r in results if r.status == "failed"]
    assert len(failed) == 1 and "1.0.lonely" in failed[0].message and "no mask" in failed[0].message


def test_small_volume_and_non_hu_image_warn_naming_the_file(tmp_path):
    _write(tmp_path / "lung_ct_image" / "1.0.x.mhd", np.full((10, 20, 20), 1000, np.int16))
    m = np.zeros((10, 20, 20), np.uint8)
    m[2:8, 4:16, 4:16] = 3
    _write(tmp_path / "seg-lungs-LUNA16" / "1.0.x.mhd", m)
    (r,) = preprocess_dataset(tmp_path, 4.0, (64, 64, 64), workers=1, progress=False)
    assert r.status == "done"
    text = " ".join(r.warnings)
    assert "Hounsfield" in text and "smaller than the crop" in text and "1.0.x.mhd" in text


@pytest.mark.parametrize(
    "args, words",
    [
        (["{root}/nowhere", "2.5", "128", "160", "160"], "does not exist"),
        (["{root}/empty", "2.5", "128", "160", "160"], "no CT images"),
        (["{root}/empty", "-1", "128", "160", "160"], "VOX_SPACING"),
        (["{root}/empty", "2.5", "0", "160", "160"], "Z_MAX"),
    ],
)
def test_cli_bad_arguments_are_one_line(tmp_path, args, words, capsys):
    from pipeline import cli

    (tmp_path / "empty" / "lung_ct_image").mkdir(parents=True)
    assert cli.main(["preprocess", *[a.format(root=tmp_path) for a in args]]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert lines[-1].startswith("error:") and words in lines[-1] and "Traceback" not in err


def test_cli_synth_then_preprocess_end_to_end(tmp_path, capsys):
    """The commands' entry point in this process (``python -m pipeline`` around it: tests/pipeline/inference)."""
    from pipeline import cli

    root = tmp_path / "synth"
    assert cli.main(["synth", str(root), "--cases", "2", "--shape", "48", "48", "24"]) == 0
    capsys.readouterr()
    assert cli.main(["preprocess", str(root), "4", "32", "32", "32", "--workers", "1", "--no-progress"]) == 0
    assert "2 done, 0 skipped, 0 failed" in capsys.readouterr().out
    files = sorted((root / OUTPUT_IMAGE_DIR).glob("*.mhd"))
    assert len(files) == 2 and sitk.ReadImage(str(files[0])).GetSize() == (32, 32, 32)
    # a case that fails makes the exit status non-zero
    (root / "lung_ct_image" / f"{files[0].stem}.zraw").write_bytes(b"\0" * 10)
    code = cli.main(["preprocess", str(root), "4", "32", "32", "32", "--overwrite", "--workers", "1", "--no-progress"])
    assert code == 1 and "1 failed" in capsys.readouterr().out


@pytest.mark.parametrize("overlay, words", [
    ({"vox_spacing": "abc"}, "'preprocessing_transforms' cannot be built"),
    ({"spatial_size": "big"}, "spatial_size 'big': expected mm and (X, Y, Z) voxel counts"),
])
def test_cli_bad_config_value_is_one_line(tmp_path, overlay, words):
    """A wrong value in a config overlay: one line naming the config and the key, exit 2, nothing written."""
    _case(tmp_path / "root", "1.2.3", seed=1)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(overlay))
    proc = subprocess.run([sys.executable, "-m", "pipeline", "preprocess", str(tmp_path / "root"), "--config",
                           str(REPO / "bundle" / "configs" / "train.json"), str(bad), "--no-progress"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0] and str(bad) in lines[0]
    assert not (tmp_path / "root" / OUTPUT_IMAGE_DIR).exists()


@pytest.mark.parametrize("workers", [0, -3])
def test_workers_must_be_positive(tmp_path, workers):
    _case(tmp_path, "1.2.3", seed=1)
    with pytest.raises(InputError, match="--workers must be a whole number >= 1"):
        preprocess_dataset(tmp_path, 4.0, SIZE, workers=workers, progress=False)
