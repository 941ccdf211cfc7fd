"""Atomic writes and weights-only checkpoint loading."""

from __future__ import annotations

import os
import pickle
import stat

import pytest
import torch

from pipeline.files import atomic_path, atomic_torch_save, atomic_write_text, load_checkpoint, unwrap_state_dict
from transforms.errors import InputError


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_crafted_pickle_is_refused_with_a_clear_message(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": _Evil()}, path)  # a crafted checkpoint: loading it unsafely would call os.system
    with pytest.raises(InputError, match="refused: it is not a plain weights file"):
        load_checkpoint(path)


@pytest.mark.parametrize("content, words", [(None, "does not exist"), (b"garbage", "cannot be read"),
                                            (pickle.dumps({"a": 1}), "cannot be read")])
def test_missing_or_truncated_checkpoint(tmp_path, content, words):
    path = tmp_path / "ckpt.pt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError, match=words):
        load_checkpoint(path)


def test_atomic_save_round_trip_and_permissions(tmp_path):
    net = torch.nn.Linear(2, 3)
    path = atomic_torch_save(unwrap_state_dict(torch.nn.DataParallel(net)), tmp_path / "sub" / "model.pt")
    state = load_checkpoint(path)
    assert set(state) == {"weight", "bias"}  # no "module." prefix
    assert stat.S_IMODE(path.stat().st_mode) & 0o044  # readable by others like any normal file
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "table.csv"
    atomic_write_text(target, "old\n")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"]


def test_unwritable_folder_is_an_input_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="cannot write"):
        atomic_write_text(blocker / "out.txt", "y")


_WRITERS = {
    "checkpoint": (
        "import sys, torch\nfrom pipeline.files import atomic_torch_save\ni = 0\n"
        "while True:\n    atomic_torch_save({'i': torch.full((1_000_000,), float(i))}, sys.argv[1]); i += 1\n"
    ),
    "mask": (
        "import sys, numpy as np, SimpleITK as sitk\nfrom transforms.io import write_sitk\ni = 0\n"
        "while True:\n    write_sitk(sitk.GetImageFromArray(np.full((64, 128, 128), i % 200, np.uint8)), sys.argv[1]); i += 1\n"
    ),
}


def _check(kind: str, path):
    if kind == "checkpoint":
        t = load_checkpoint(path)["i"]
        assert t.numel() == 1_000_000 and bool((t == t[0]).all())
    else:
        import SimpleITK as sitk

        a = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
        assert a.shape == (64, 128, 128) and (a == a.flat[0]).all()


@pytest.mark.slow
@pytest.mark.parametrize("kind, name", [("checkpoint", "vnet_checkpoint.pth.tar"), ("mask", "case_lung.mhd")])
def test_a_writer_killed_at_any_moment_leaves_a_complete_file(tmp_path, kind, name):
    """SIGKILL a process that rewrites a file in a loop, at several moments: what is left always loads whole."""
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    path = tmp_path / name
    for delay in (0.0, 0.03, 0.07, 0.13, 0.21):
        proc = subprocess.Popen([sys.executable, "-c", _WRITERS[kind], str(path)], cwd=repo)
        deadline = time.time() + 60
        while not path.exists() and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        _check(kind, path)
    # a kill can strand a hidden temporary beside the file, never a partial file under the final name
    visible = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("."))
    assert visible == ([name] if kind == "checkpoint" else ["case_lung.mhd", "case_lung.zraw"])
