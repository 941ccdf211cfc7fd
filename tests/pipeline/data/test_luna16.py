"""LUNA16 discovery, pairing, splits and datalists (placeholder files only, no CT needed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.data import luna16
from pipeline.data.luna16 import Case, build_datalist, datalist, find_cases, read_uid_file, split_cases, write_datalist
from transforms.errors import InputError

REPO = Path(__file__).resolve().parents[3]


def touch(root: Path, folder: str, *uids: str) -> None:
    """Empty ``<uid>.mhd`` placeholders in ``root/folder``."""
    (root / folder).mkdir(parents=True, exist_ok=True)
    for uid in uids:
        (root / folder / f"{uid}.mhd").write_text("")


def fake_cases(n: int, prefix: str = "1.2.3.") -> list[Case]:
    return [Case(f"{prefix}{i}", f"/img/{i}.mhd", f"/lab/{i}.mhd") for i in range(n)]


# ---------------------------------------------------------------- find_cases: layouts


def test_reference_layout(tmp_path):
    touch(tmp_path, luna16.IMAGE_DIR, "b", "a", "c")
    touch(tmp_path, luna16.MASK_DIR, "a", "b", "c")
    cases = find_cases(tmp_path)
    assert [c.uid for c in cases] == ["a", "b", "c"]
    for c in cases:
        assert c.image == str((tmp_path / luna16.IMAGE_DIR / f"{c.uid}.mhd").resolve())
        assert c.label == str((tmp_path / luna16.MASK_DIR / f"{c.uid}.mhd").resolve())
        assert c.subset is None and Path(c.image).is_absolute()


@pytest.mark.parametrize(
    "with_normalized, prefer, expected_image_dir",
    [
        (True, True, luna16.NORMALIZED_IMAGE_DIR),
        (True, False, luna16.IMAGE_DIR),
        (False, True, luna16.IMAGE_DIR),  # asked for, absent: falls back to the raw CTs
    ],
)
def test_normalized_layout(tmp_path, with_normalized, prefer, expected_image_dir):
    touch(tmp_path, luna16.IMAGE_DIR, "a", "b")
    touch(tmp_path, luna16.MASK_DIR, "a", "b")
    if with_normalized:
        touch(tmp_path, luna16.NORMALIZED_IMAGE_DIR, "a", "b")
        touch(tmp_path, luna16.NORMALIZED_MASK_DIR, "a", "b")
    cases = find_cases(tmp_path, prefer_normalized=prefer)
    normalized = expected_image_dir == luna16.NORMALIZED_IMAGE_DIR
    expected_mask_dir = luna16.NORMALIZED_MASK_DIR if normalized else luna16.MASK_DIR
    assert [Path(c.image).parent.name for c in cases] == [expected_image_dir] * 2
    assert [Path(c.label).parent.name for c in cases] == [expected_mask_dir] * 2


def test_official_layout(tmp_path):
    touch(tmp_path, "subset0", "u0", "u1")
    touch(tmp_path, "subset9", "u9")
    touch(tmp_path, "subset3/subset3", "u3")  # what unzipping subset3.zip into subset3/ leaves
    touch(tmp_path, luna16.MASK_DIR, "u0", "u1", "u3", "u9")
    cases = find_cases(tmp_path)
    assert {c.uid: c.subset for c in cases} == {"u0": 0, "u1": 0, "u3": 3, "u9": 9}
    assert Path(next(c for c in cases if c.uid == "u3").image).parent == (tmp_path / "subset3" / "subset3").resolve()


def test_uid_twice_in_two_subsets(tmp_path):
    touch(tmp_path, "subset0", "dup")
    touch(tmp_path, "subset1", "dup")
    touch(tmp_path, luna16.MASK_DIR, "dup")
    with pytest.raises(InputError, match="'dup' appears twice"):
        find_cases(tmp_path)


# ---------------------------------------------------------------- find_cases: pairing and messages


def test_unpaired_images_are_one_clear_error(tmp_path):
    touch(tmp_path, luna16.IMAGE_DIR, "a", "b", "c")
    touch(tmp_path, luna16.MASK_DIR, "a", "x")
    with pytest.raises(InputError) as err:
        find_cases(tmp_path)
    message = str(err.value)
    assert "2 of 3 CTs have no mask" in message and "first: b, c" in message
    assert "1 masks have no CT (first: x)" in message
    assert "allow_unpaired=True" in message and luna16.MASK_DIR in message


def test_unpaired_allowed_warns_and_skips(tmp_path):
    touch(tmp_path, luna16.IMAGE_DIR, "a", "b")
    touch(tmp_path, luna16.MASK_DIR, "a")
    with pytest.warns(UserWarning, match="1 of 2 CTs have no mask.*skipped"):
        cases = find_cases(tmp_path, allow_unpaired=True)
    assert [c.uid for c in cases] == ["a"]


def test_masks_without_images_only_warn(tmp_path):
    touch(tmp_path, luna16.IMAGE_DIR, "a")
    touch(tmp_path, luna16.MASK_DIR, "a", "extra1", "extra2")
    with pytest.warns(UserWarning, match="2 masks have no CT"):
        assert [c.uid for c in find_cases(tmp_path)] == ["a"]


def test_missing_mask_folder(tmp_path):
    touch(tmp_path, luna16.IMAGE_DIR, "a")
    with pytest.raises(InputError, match=f"1 of 1 CTs have no mask in '.*{luna16.MASK_DIR}'"):
        find_cases(tmp_path)


def test_missing_root(tmp_path):
    with pytest.raises(InputError) as err:
        find_cases(tmp_path / "nowhere")
    assert "does not exist" in str(err.value) and "python -m pipeline synth ROOT --cases 8" in str(err.value)


@pytest.mark.parametrize("folders", [[], [luna16.IMAGE_DIR], ["subset0", luna16.MASK_DIR]])
def test_no_images(tmp_path, folders):
    for folder in folders:
        (tmp_path / folder).mkdir()
    with pytest.raises(InputError) as err:
        find_cases(tmp_path)
    message = str(err.value)
    assert "no CT images" in message and luna16.IMAGE_DIR in message and "subset0..subset9" in message
    assert "python -m pipeline synth ROOT --cases 8" in message


# ---------------------------------------------------------------- split_cases: hash split

# The child skips transforms/__init__.py (it imports torch and MONAI: seconds per process) by registering a bare
# `transforms` package; pipeline.data.luna16 itself only needs transforms.errors.
_SPLIT_SCRIPT = """
import json, sys, types
bare = types.ModuleType("transforms")
bare.__path__ = [sys.argv[1]]
sys.modules["transforms"] = bare
from pipeline.data.luna16 import Case, split_cases
cases = [Case(f"1.3.6.{i}", "i", "l") for i in range(60)]
train, val = split_cases(cases, val_fraction=0.2, seed=5)
print(json.dumps([c.uid for c in val]))
"""


def test_hash_split_ignores_pythonhashseed():
    def run(hash_seed: str) -> subprocess.Popen:
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(REPO)}
        command = [sys.executable, "-c", _SPLIT_SCRIPT, str(REPO / "transforms")]
        return subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.PIPE, text=True)

    procs = [run("1"), run("98765")]  # concurrently: each pays the import cost once
    outputs = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    here = [c.uid for c in split_cases([Case(f"1.3.6.{i}", "i", "l") for i in range(60)], 0.2, seed=5)[1]]
    assert outputs[0] == outputs[1] == here
    assert all(p.returncode == 0 for p in procs)


def test_adding_cases_keeps_assignments():
    old_train, old_val = split_cases(fake_cases(100), 0.15, seed=3)
    new_train, new_val = split_cases(fake_cases(100) + fake_cases(50, prefix="9.9."), 0.15, seed=3)
    assert {c.uid for c in old_val} <= {c.uid for c in new_val}
    assert {c.uid for c in old_train} <= {c.uid for c in new_train}


@pytest.mark.parametrize("fraction", [0.15, 0.3])
def test_fraction_roughly_honoured(fraction):
    train, val = split_cases(fake_cases(200), fraction, seed=0)
    assert len(train) + len(val) == 200 and not {c.uid for c in train} & {c.uid for c in val}
    assert abs(len(val) / 200 - fraction) < 0.07


def test_seed_changes_the_split():
    splits = {tuple(c.uid for c in split_cases(fake_cases(40), 0.25, seed=s)[1]) for s in range(3)}
    assert len(splits) == 3


@pytest.mark.parametrize("fraction", [1e-6, 0.999999])
def test_two_cases_one_each_side(fraction):
    train, val = split_cases(fake_cases(2), fraction, seed=0)
    assert len(train) == len(val) == 1


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_bad_val_fraction(fraction):
    with pytest.raises(InputError, match="val_fraction must be in"):
        split_cases(fake_cases(5), fraction)


# ---------------------------------------------------------------- split_cases: official subsets


def subset_cases() -> list[Case]:
    return [Case(f"s{s}.{i}", "i", "l", subset=s) for s in range(10) for i in range(3)]


@pytest.mark.parametrize("val_subsets, expected", [(None, {9}), ([8], {8}), ((7, 8), {7, 8})])
def test_official_subsets(val_subsets, expected):
    train, val = split_cases(subset_cases(), val_subsets=val_subsets)
    assert {c.subset for c in val} == expected and not {c.subset for c in train} & expected
    assert len(train) + len(val) == 30


def test_explicit_absent_subset_is_an_error():
    cases = [c for c in subset_cases() if c.subset != 7]
    with pytest.raises(InputError, match=r"val_subsets=\[7\] leaves the validation set empty"):
        split_cases(cases, val_subsets=[7])


def test_default_subset_missing_falls_back_to_hash():
    cases = [c for c in subset_cases() if c.subset in (0, 1)]
    with pytest.warns(UserWarning, match="not downloaded"):
        train, val = split_cases(cases, val_fraction=0.3, seed=0)
    assert train and val and len(train) + len(val) == 6


# ---------------------------------------------------------------- uid files


def test_read_uid_file(tmp_path):
    path = tmp_path / "uids.txt"
    path.write_text("# reference test uids\n\n1.2.3.0\n  1.2.3.1  # trailing comment\n1.2.3.0\n1.2.3.2")  # no final \n
    assert read_uid_file(path) == ["1.2.3.0", "1.2.3.1", "1.2.3.2"]


def test_read_uid_file_missing(tmp_path):
    with pytest.raises(InputError, match="uid file '.*nope.txt' cannot be read"):
        read_uid_file(tmp_path / "nope.txt")


def test_split_by_uid_files(tmp_path):
    (tmp_path / "val.txt").write_text("1.2.3.1\n1.2.3.4")
    train, val = split_cases(fake_cases(6), val_uids=tmp_path / "val.txt")
    assert [c.uid for c in val] == ["1.2.3.1", "1.2.3.4"]
    assert [c.uid for c in train] == ["1.2.3.0", "1.2.3.2", "1.2.3.3", "1.2.3.5"]


def test_split_by_both_lists_leaves_the_rest_out():
    train, val = split_cases(fake_cases(5), train_uids=["1.2.3.0", "1.2.3.1"], val_uids=["1.2.3.4"])
    assert [c.uid for c in train] == ["1.2.3.0", "1.2.3.1"] and [c.uid for c in val] == ["1.2.3.4"]


def test_train_list_only():
    train, val = split_cases(fake_cases(3), train_uids=["1.2.3.2"])
    assert [c.uid for c in train] == ["1.2.3.2"] and [c.uid for c in val] == ["1.2.3.0", "1.2.3.1"]


def test_unknown_uid_names_the_file(tmp_path):
    (tmp_path / "test_uids.txt").write_text("1.2.3.0\n9.9.9\n")
    with pytest.raises(InputError, match=r"uid file '.*test_uids.txt' \(val_uids\) names 1 uids .*first: 9.9.9"):
        split_cases(fake_cases(3), val_uids=tmp_path / "test_uids.txt")


def test_overlapping_lists():
    with pytest.raises(InputError, match="share 1 uids"):
        split_cases(fake_cases(3), train_uids=["1.2.3.0", "1.2.3.1"], val_uids=["1.2.3.1"])


# ---------------------------------------------------------------- datalists


def test_build_and_write_datalist(tmp_path):
    root = tmp_path / "data"
    uids = [f"1.3.6.{i}" for i in range(12)]
    touch(root, luna16.IMAGE_DIR, *uids)
    touch(root, luna16.MASK_DIR, *uids)
    built = build_datalist(root, val_fraction=0.25, seed=1)
    assert set(built) == {"training", "validation"}
    items = built["training"] + built["validation"]
    assert sorted(item["uid"] for item in items) == sorted(uids)
    for item in items:
        assert set(item) == {"image", "label", "uid"}
        assert item["image"] == str((root / luna16.IMAGE_DIR / f"{item['uid']}.mhd").resolve())
        assert item["label"] == str((root / luna16.MASK_DIR / f"{item['uid']}.mhd").resolve())
    target = write_datalist(tmp_path / "out" / "datalist.json", built)
    assert json.loads(target.read_text()) == built
    assert [p.name for p in target.parent.iterdir()] == ["datalist.json"]  # no temporary file left
    assert datalist(root, "validation", val_fraction=0.25, seed=1) == built["validation"]
    assert datalist(root, val_fraction=0.25, seed=1) == built["training"]


def test_datalist_bad_section(tmp_path):
    with pytest.raises(InputError, match="section must be one of"):
        datalist(tmp_path, "test")


# ---------------------------------------------------------------- the reference's split


def _reference_uids() -> list[str]:
    return read_uid_file(luna16.REFERENCE_TEST_UIDS)


def test_reference_test_list_ships_with_the_package():
    uids = _reference_uids()
    assert len(uids) == len(set(uids)) == 134
    assert all(u.startswith("1.3.6.1.4.1.14519.5.2.1.6279.6001.") for u in uids)
    assert luna16.LUNA16_SCANS - len(uids) == 754  # the reference's training list


def test_reference_split_puts_exactly_the_listed_uids_in_validation(tmp_path, caplog):
    listed = _reference_uids()
    tested = [listed[0], listed[57], listed[-1]]
    others = ["1.3.6.1.4.1.14519.5.2.1.6279.6001.100000000000000000000000000001",
              "1.3.6.1.4.1.14519.5.2.1.6279.6001.100000000000000000000000000002", "2.25.3", "2.25.4"]
    for i, uid in enumerate(tested + others):
        touch(tmp_path, f"subset{i % 10}", uid)
    touch(tmp_path, luna16.MASK_DIR, *tested, *others)
    with caplog.at_level("INFO", logger=luna16.logger.name):
        built = build_datalist(tmp_path, split="reference")
    assert sorted(item["uid"] for item in built["validation"]) == sorted(tested)
    assert sorted(item["uid"] for item in built["training"]) == sorted(others)
    assert "7 of the 888 LUNA16 scans found" in caplog.text and "3 of the 134" in caplog.text


def test_the_subsets_split_ignores_the_reference_list(tmp_path):
    listed = _reference_uids()[:2]
    uids = [*listed, "2.25.8", "2.25.9"]
    for i, uid in enumerate(uids):
        touch(tmp_path, f"subset{6 + i}", uid)
    touch(tmp_path, luna16.MASK_DIR, *uids)
    built = build_datalist(tmp_path, split="subsets")
    assert [item["uid"] for item in built["validation"]] == ["2.25.9"]


def test_reference_split_without_any_listed_uid_is_one_line(tmp_path):
    with pytest.raises(InputError, match="none of the 134 test uids") as err:
        split_cases(fake_cases(5), split="reference")
    assert "\n" not in str(err.value) and "--split subsets" in str(err.value)


def test_reference_split_with_a_missing_list_names_it(tmp_path):
    with pytest.raises(InputError, match="gone.txt' does not exist"):
        split_cases(fake_cases(5), split="reference", reference_uids=tmp_path / "gone.txt")


def test_reference_split_of_test_scans_only_has_nothing_to_train_on():
    cases = [Case(uid, "/i.mhd", "/l.mhd") for uid in _reference_uids()[:3]]
    with pytest.raises(InputError, match="nothing is left to train on"):
        split_cases(cases, split="reference")


def test_unknown_split_is_named():
    with pytest.raises(InputError, match="split 'official': expected one of subsets, hash, reference"):
        split_cases(fake_cases(3), split="official")
