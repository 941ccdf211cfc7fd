"""pyproject.toml: the packages, the bundle's configs and the dependencies that ``pip install .`` installs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from fnmatch import fnmatch
from pathlib import Path

from packaging.requirements import Requirement

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def _requirements(lines) -> dict[str, str]:
    reqs = [Requirement(ln.split("#")[0].strip()) for ln in lines if ln.split("#")[0].strip()]
    return {r.name.lower(): str(r.specifier) for r in reqs}


def test_dependencies_equal_requirements_txt():
    listed = _requirements((REPO / "requirements.txt").read_text().splitlines())
    assert _requirements(PROJECT["project"]["dependencies"]) == listed
    assert "torch-npu" not in listed and "torch_npu" not in listed  # it breaks `import torch` without CANN
    assert PROJECT["project"]["optional-dependencies"]["npu"] == ["torch-npu"]


def test_every_package_and_bundle_file_is_installed():
    setuptools = PROJECT["tool"]["setuptools"]
    packages = set(setuptools["packages"])
    found = {".".join(p.parent.relative_to(REPO).parts) for top in ("pipeline", "transforms", "networks")
             for p in (REPO / top).rglob("__init__.py")}
    assert found <= packages and "pipeline.bundle" in packages
    assert setuptools["package-dir"]["pipeline.bundle"] == "bundle"
    patterns = setuptools["package-data"]["pipeline.bundle"]
    bundle = REPO / "bundle"
    tracked = subprocess.run(["git", "ls-files", "bundle"], cwd=REPO, capture_output=True, text=True).stdout.split()
    for rel in (Path(t).relative_to("bundle").as_posix() for t in tracked):
        if not rel.startswith("models/"):
            assert any(fnmatch(rel, p) for p in patterns), f"bundle/{rel} would not be installed"
    assert (bundle / "configs" / "inference.json").is_file()


def test_console_script_runs_the_cli(tmp_path):
    """The installed ``vnet-lung`` (README: pip install -e .) runs the CLI from any folder."""
    assert PROJECT["project"]["scripts"]["vnet-lung"] == "pipeline.cli:main"
    script = shutil.which("vnet-lung") or str(Path(sys.executable).parent / "vnet-lung")
    assert Path(script).is_file(), "vnet-lung is not installed: pip install -e . (README)"
    proc = subprocess.run([script, "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("usage: vnet-lung"), proc.stderr[-2000:]
    for command in ("synth", "preprocess", "train", "segment", "export"):
        assert command in proc.stdout
