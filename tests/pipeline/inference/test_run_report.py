"""report.html of the segment tool: every scan's row with lung_stats.csv's values, links inside the output folder,
failed inputs listed, rewritten after each scan, kept across reruns; sorting and filtering in a real browser."""

from __future__ import annotations

import csv
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
import SimpleITK as sitk

from pipeline.inference.outputs import REPORT_HTML
from pipeline.inference.run_report import COLUMNS
from pipeline.inference.segmenter import LungSegmenter, segment_inputs
from tests.pipeline.inference.test_guards import chest_in_air
from tests.pipeline.inference.test_segmenter import ThresholdNet, phantom


class Page(HTMLParser):
    """The page's table rows (cells' data-value and text), every href/src, and the failure list."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.rows: list[dict] = []
        self.links: list[str] = []
        self.failures: list[str] = []
        self._row = self._cell = self._li = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("href", "src"):
            if key in a:
                self.links.append(a[key])
        if tag == "tr" and "data-status" in a:
            self._row = {"status": a["data-status"], "flags": a["data-flags"], "cells": []}
        elif tag == "td" and self._row is not None:
            self._cell = {"value": a.get("data-value"), "text": ""}
        elif tag == "li":
            self._li = ""

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data
        if self._li is not None:
            self._li += data

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self._row["cells"].append(self._cell)
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None
        elif tag == "li" and self._li is not None:
            self.failures.append(self._li)
            self._li = None


def _by_name(page: Page) -> dict[str, dict]:
    keys = ["qc"] + [k for k, _, _ in COLUMNS]
    return {row["cells"][1]["value"]: {k: c for k, c in zip(keys, row["cells"])} | {"row": row} for row in page.rows}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Three phantoms (one with air around the body: flagged) and a broken file, segmented with the stub."""
    d = tmp_path_factory.mktemp("report")
    chest, _, _ = chest_in_air()
    sitk.WriteImage(chest, str(d / "chest.nii.gz"))
    for name, shape in (("small.mha", (48, 40, 32)), ("plain.nrrd", (64, 48, 40))):
        sitk.WriteImage(phantom(shape=shape)[0], str(d / name))
    (d / "broken.mha").write_text("not an image")
    sources = [d / n for n in ("chest.nii.gz", "small.mha", "plain.nrrd", "broken.mha")]
    writes = []
    import pipeline.inference.run_report as run_report

    original = run_report.atomic_write_text

    def recording(path, text):
        writes.append(len(_by_name(Page(text))))
        return original(path, text)

    run_report.atomic_write_text = recording
    try:
        results = segment_inputs(sources, d / "out", LungSegmenter(ThresholdNet(), device="cpu"), progress=False)
    finally:
        run_report.atomic_write_text = original
    return d, results, writes


def test_the_page_has_every_scan_with_the_csv_values_and_the_failure(run):
    d, results, writes = run
    out = d / "out"
    page = Page((out / REPORT_HTML).read_text())
    rows = _by_name(page)
    stats = {Path(r["input"]).name: r for r in csv.DictReader((out / "lung_stats.csv").open())}
    assert set(rows) == {"chest.nii.gz", "small.mha", "plain.nrrd", "broken.mha"} and len(stats) == 3
    for name, row in stats.items():
        page_row = rows[name]
        assert page_row["status"]["value"] == "done"
        for key in ("right_lung_ml", "left_lung_ml", "total_lung_ml", "mean_hu_right", "mean_hu_left", "runtime_s"):
            assert float(page_row[key]["value"]) == pytest.approx(float(row[key]), rel=1e-5), (name, key)
        assert page_row["flags"]["value"] == row["flags"] == page_row["row"]["flags"]
    assert rows["chest.nii.gz"]["flags"]["value"] == "outside_body" and rows["plain.nrrd"]["flags"]["value"] == ""
    assert rows["broken.mha"]["status"]["value"] == "failed" and rows["broken.mha"]["row"]["status"] == "failed"
    (failure,) = page.failures
    assert failure.startswith("broken.mha: ") and "broken.mha" in next(r.message for r in results if r.status == "failed")
    # rewritten after each of the 4 inputs and once at the end, each time with the rows so far
    assert writes == [1, 2, 3, 4, 4]


def test_every_link_resolves_to_a_file_in_the_folder_and_nothing_points_outside(run):
    d, _, _ = run
    out = d / "out"
    text = (out / REPORT_HTML).read_text()
    page = Page(text)
    assert page.links, "no links"
    for link in page.links:
        assert not re.match(r"^[a-z]+:|^/|\.\.", link), link  # no scheme, no absolute path, no parent folder
        assert (out / link).resolve().is_file() and out.resolve() in (out / link).resolve().parents
    assert {Path(link).name for link in page.links} == {"chest_lung.nii.gz", "chest_qc.png", "small_lung.mha",
                                                         "small_qc.png", "plain_lung.nrrd", "plain_qc.png"}
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=[\"']?https?:", text)  # nothing from a network
    assert "@import" not in text and "url(" not in text


def test_a_rerun_that_skips_finished_scans_keeps_their_rows_and_no_report_writes_none(run, tmp_path):
    d, _, _ = run
    out = tmp_path / "out"
    shutil.copytree(d / "out", out)
    segment_inputs([d / "small.mha"], out, LungSegmenter(ThresholdNet(), device="cpu"), progress=False)
    rows = _by_name(Page((out / REPORT_HTML).read_text()))
    assert {"chest.nii.gz", "small.mha", "plain.nrrd"} <= set(rows)  # the skipped scan and the earlier ones
    assert "broken.mha" not in rows  # failures are this run's
    assert "3 done (3 from earlier runs), 0 failed, 2 flagged" in (out / REPORT_HTML).read_text()
    segment_inputs([d / "plain.nrrd"], tmp_path / "none", LungSegmenter(ThresholdNet(), device="cpu"), progress=False,
                   report=False)
    assert not (tmp_path / "none" / REPORT_HTML).exists() and (tmp_path / "none" / "plain_qc.png").is_file()


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(_chromium() is None, reason="needs a headless Chromium (Debian: apt install chromium)")
@pytest.mark.parametrize("view, expected", [
    ("sort=total_lung_ml&order=asc", ["small.mha", "chest.nii.gz", "plain.nrrd", "broken.mha"]),
    ("sort=name&order=desc", ["small.mha", "plain.nrrd", "chest.nii.gz", "broken.mha"]),
    ("show=flagged", ["chest.nii.gz", "small.mha"]),  # outside_body; thin_scan (80 mm)
    ("show=failed", ["broken.mha"]),
])
def test_sorting_and_filtering_in_a_real_browser(run, view, expected):
    d, _, _ = run
    url = (d / "out" / REPORT_HTML).resolve().as_uri() + "#" + view
    proc = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", url],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    visible = re.findall(r'<tr class="[^"]*" data-status="\w+" data-flags="[^"]*"( hidden="")?>\s*<td>.*?'
                         r'<td class="text" data-value="([^"]+)"', proc.stdout, re.S)
    assert [name for hidden, name in visible if not hidden] == expected, proc.stdout[-3000:]
