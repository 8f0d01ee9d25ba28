"""`softseg batch`: cohort discovery, Dask orchestration, skipping finished work, aggregation and the HTML report.

The orchestration tests run the real `pipeline.segment_file` (what `softseg segment` runs) on a 2-worker local
Dask cluster, with the model replaced inside each worker by a stand-in that returns a soft cord of known
cross-section, so they run before (and independently of) the trained weights. One test runs the shipped
model end to end and skips while no model is installed.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import re
import shutil
from contextlib import contextmanager
from html.parser import HTMLParser
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from SoftSpinalCordSegLib import batch, bids, cli, report
from SoftSpinalCordSegLib.errors import InputError, ModelNotInstalledError
from SoftSpinalCordSegLib.morphometry import SLICE_COLUMNS, CsaTable
from SoftSpinalCordSegLib.phantom import CordPhantom, soft_mask

from conftest import data_root

STAND_IN_AREA_MM2 = 50.0
UNF01_CONTRASTS = ("T1w", "T2w", "T2star")
UNREADABLE = re.compile("corrupt|cannot read")  # what io says of a truncated file
UNF01_CROP = (slice(44, 92), slice(30, 78), slice(None))  # 48x48x16 voxels of 1 mm around the cord


# ------------------------------------------------------------------------------------------ the stand-in model
def stand_in_model(array, affine, *, device="auto", largest_component=True, progress=None, cancel=None,
                   both_polarities=True):
    """A straight soft cord of known cross-section along S through the image centre (exact partial volume)."""
    centre = affine[:3, :3] @ ((np.array(array.shape) - 1) / 2) + affine[:3, 3]
    shifted = np.array(affine, dtype=float)
    shifted[:3, 3] -= centre
    return soft_mask(CordPhantom(area_mm2=STAND_IN_AREA_MM2, aspect=1.3, length_mm=1e4), array.shape, shifted)


@contextmanager
def stand_in_installed():
    from SoftSpinalCordSegLib import inference

    original = inference.segment_image
    inference.segment_image = stand_in_model
    try:
        yield
    finally:
        inference.segment_image = original


def segment_file_with_stand_in(image_path, output_path, **options):
    """pipeline.segment_file with the stand-in model (runs on the Dask workers)."""
    from SoftSpinalCordSegLib.pipeline import segment_file

    with stand_in_installed():
        return segment_file(image_path, output_path, **options)


# ------------------------------------------------------------------------------------------ the test cohort
def write_image(array, affine, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(array, dtype=np.float32), affine), str(path))
    return path


def phantom_mri(shape, affine, seed):
    """An MRI-like phantom: cord in a CSF tube in darker tissue, with noise."""
    centre = affine[:3, :3] @ ((np.array(shape) - 1) / 2) + affine[:3, 3]
    shifted = np.array(affine, dtype=float)
    shifted[:3, 3] -= centre
    cord = soft_mask(CordPhantom(area_mm2=70.0, length_mm=1e4), shape, shifted)
    canal = soft_mask(CordPhantom(area_mm2=200.0, aspect=1.2, length_mm=1e4), shape, shifted)
    noise = np.random.default_rng(seed).normal(0, 5, shape)
    return 60 + 240 * (canal - cord) + 110 * cord + noise


def build_cohort(root: Path) -> dict:
    """A BIDS dataset: unf01's three contrasts (cropped, when the shared data is there), phantoms of two
    subjects (one with a session, one sagittal LPS) and one truncated (corrupt) file. Returns its parts."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "batch test", "BIDSVersion": "1.9.0"}))
    good = []
    unf01 = data_root() / "real" / "unf01"
    if all((unf01 / f"sub-unf01_{c}.nii.gz").is_file() for c in UNF01_CONTRASTS):
        for contrast in UNF01_CONTRASTS:
            source = nib.load(str(unf01 / f"sub-unf01_{contrast}.nii.gz"))
            crop = source.slicer[UNF01_CROP]
            good.append(write_image(crop.get_fdata(), crop.affine, root / "sub-unf01" / "anat" / f"sub-unf01_{contrast}.nii.gz"))
    axial = np.diag([1.0, 1.0, 1.0, 1.0])
    axial[:3, 3] = (-10, 30, -200)
    good.append(write_image(phantom_mri((24, 24, 10), axial, 1), axial, root / "sub-ph01" / "ses-01" / "anat" / "sub-ph01_ses-01_T2w.nii.gz"))
    sagittal_lps = np.array([[-2.0, 0, 0, 8], [0, -1.0, 0, 40], [0, 0, 1.0, -210], [0, 0, 0, 1]])  # 2 mm R-L slices
    good.append(write_image(phantom_mri((12, 24, 14), sagittal_lps, 2), sagittal_lps,
                            root / "sub-ph01" / "ses-01" / "anat" / "sub-ph01_ses-01_acq-sag_T1w.nii.gz"))
    good.append(write_image(phantom_mri((20, 22, 8), axial, 3), axial, root / "sub-ph02" / "anat" / "sub-ph02_T2star.nii.gz"))
    corrupt = root / "sub-ph02" / "anat" / "sub-ph02_T2w.nii.gz"
    whole = gzip.compress(nib.Nifti1Image(phantom_mri((20, 22, 8), axial, 4).astype(np.float32), axial).to_bytes())
    corrupt.write_bytes(whole[: len(whole) // 2])
    # Never processed: another pipeline's derivatives and a BIDS sourcedata folder.
    for folder in (root / "derivatives" / "other" / "sub-ph02" / "anat", root / "sourcedata"):
        folder.mkdir(parents=True)
        shutil.copy(good[-1], folder / good[-1].name)
    return {"good": good, "corrupt": corrupt, "has_unf01": len(good) == 6}


class ReportParser(HTMLParser):
    """Collects what a reader sees: title, images, table cells, section ids, external resources."""

    def __init__(self):
        super().__init__()
        self.title, self.images, self.cells, self.sections, self.external = "", [], [], [], []
        self._in = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("title", "td"):
            self._in = tag
            if tag == "td":
                self.cells.append("")
        if tag == "img":
            self.images.append(attrs)
        if tag == "section":
            self.sections.append(attrs.get("id"))
        if tag in ("link", "script") and (attrs.get("href") or attrs.get("src")):
            self.external.append(attrs)

    def handle_endtag(self, tag):
        self._in = None if tag == self._in else self._in

    def handle_data(self, data):
        if self._in == "title":
            self.title += data
        elif self._in == "td":
            self.cells[-1] += data


def parse_report(path: Path) -> ReportParser:
    parser = ReportParser()
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    return parser


def read_rows(path: Path, delimiter=","):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle, delimiter=delimiter))


# ------------------------------------------------------------------------------------------ discovery
def test_discovery_reads_bids_entities_and_names_derivatives(tmp_path):
    cohort = build_cohort(tmp_path / "ds")
    # Derivatives written inside the dataset (--output ds) are not images to segment.
    shutil.copy(cohort["good"][-1], cohort["good"][-1].parent / "sub-ph02_T2star_label-SC_probseg.nii.gz")
    images = bids.discover(tmp_path / "ds")
    paths = sorted(Path(image.path) for image in images)
    assert paths == sorted(cohort["good"] + [cohort["corrupt"]])  # nothing from derivatives/ or sourcedata/
    sagittal = next(image for image in images if "acq-sag" in image.path)
    assert (sagittal.subject, sagittal.session, sagittal.contrast) == ("ph01", "01", "T1w")
    assert report.contrast_label(sagittal) == "acq-sag_T1w"
    outputs = sagittal.outputs(tmp_path / "out")
    assert outputs["probseg"] == tmp_path / "out" / "sub-ph01" / "ses-01" / "anat" / "sub-ph01_ses-01_acq-sag_T1w_label-SC_probseg.nii.gz"
    assert outputs["mask"].name == "sub-ph01_ses-01_acq-sag_T1w_label-SC_mask.nii.gz"
    assert outputs["csa"].name == "sub-ph01_ses-01_acq-sag_T1w_csa.csv"
    only_t2 = bids.discover(tmp_path / "ds", include=["*_T2w.nii.gz"])
    assert sorted(image.stem for image in only_t2) == sorted(
        ["sub-ph01_ses-01_T2w", "sub-ph02_T2w"] + (["sub-unf01_T2w"] if cohort["has_unf01"] else []))
    assert bids.default_output_dir(tmp_path / "ds") == tmp_path / "ds" / "derivatives" / "softseg"


def test_discovery_of_a_plain_folder_and_a_file_list(tmp_path):
    folder = tmp_path / "scans"
    affine = np.eye(4)
    write_image(phantom_mri((16, 16, 6), affine, 5), affine, folder / "site_a" / "patient7_t2.nii.gz")
    write_image(np.ones((16, 16, 6)), affine, folder / "site_a" / "patient7_t2_seg-manual.nii.gz")
    write_image(np.ones((16, 16, 6)), affine, folder / "patient8_T2w_label-SC_mask.nii.gz")
    for mask in ("gmseg-manual", "csfseg", "lesionseg", "dseg", "probseg"):  # as gm-challenge and SCT name them
        write_image(np.ones((16, 16, 6)), affine, folder / "site_a" / f"patient7_t2_{mask}.nii.gz")
    write_image(phantom_mri((16, 16, 6), affine, 6), affine, folder / "patient9_acq-masked_T2w.nii.gz")
    (folder / "notes.txt").write_text("not an image")
    images = bids.discover(folder)
    assert [image.stem for image in images] == ["patient9_acq-masked_T2w", "patient7_t2"]  # masks left out
    assert images[1].output_dir == "site_a" and images[1].subject == "patient7_t2"
    # contrast: the BIDS suffix of a BIDS-like name, else the whole stem (t2 of patient7_t2 is not its contrast)
    assert [(image.contrast, report.contrast_label(image)) for image in images] == [
        ("T2w", "acq-masked_T2w"), ("patient7_t2", "patient7_t2")]
    assert bids.describe(folder / "t2_ms.nii.gz").contrast == "t2_ms"
    runs = [bids.describe(folder / f"sub-07_ses-01_run-{n}_T2w.nii.gz") for n in (1, 2)]
    assert [report.contrast_label(image) for image in runs] == ["run-1_T2w", "run-2_T2w"]  # two rows, two tables
    # files named like BIDS beside others (as the SCT tutorial's folder): a plain folder, every image kept
    write_image(phantom_mri((16, 16, 6), affine, 7), affine, folder / "sub-01_acq-MTon_MTS.nii.gz")
    assert {image.stem for image in bids.discover(folder)} == {"patient9_acq-masked_T2w", "patient7_t2",
                                                             "sub-01_acq-MTon_MTS"}

    listing = tmp_path / "cohort.txt"
    listing.write_text("# my cohort\nscans/site_a/patient7_t2.nii.gz\n\n")
    listed = bids.discover(listing)
    assert [Path(image.path).resolve() for image in listed] == [(folder / "site_a" / "patient7_t2.nii.gz").resolve()]
    write_image(phantom_mri((16, 16, 6), affine, 5), affine, folder / "site_b" / "patient7_t2.nii.gz")
    listing.write_text("scans/site_a/patient7_t2.nii.gz\nscans/site_b/patient7_t2.nii.gz\n")  # one name, two folders
    assert [image.output_dir for image in bids.discover(listing)] == ["site_a", "site_b"]
    assert bids.default_output_dir(listing) == tmp_path / "derivatives" / "softseg"


def test_discovery_errors_are_one_line(tmp_path):
    with pytest.raises(InputError, match="no such dataset"):
        bids.discover(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images found"):
        bids.discover(tmp_path / "empty")
    image = write_image(np.ones((4, 4, 4)), np.eye(4), tmp_path / "one.nii.gz")
    with pytest.raises(InputError, match="softseg segment"):
        bids.discover(image)
    bad_list = tmp_path / "list.txt"
    bad_list.write_text("scan.dcm\n")
    with pytest.raises(InputError, match=r"list.txt:1: scan.dcm is not a NIfTI"):
        bids.discover(bad_list)
    bad_list.write_text("one.nii.gz\n# the same image again, another way\n./one.nii.gz\n")
    with pytest.raises(InputError, match=r"list.txt:3: ./one.nii.gz is listed twice \(also on line 1\)"):
        bids.discover(bad_list)
    write_image(np.ones((4, 4, 4)), np.eye(4), tmp_path / "twice" / "a" / "scan.nii.gz")
    write_image(np.ones((4, 4, 4)), np.eye(4), tmp_path / "twice" / "a" / "scan.nii")
    with pytest.raises(InputError, match="would write the same outputs"):
        bids.discover(tmp_path / "twice")


# ------------------------------------------------------------------------------------------ aggregation
def csa_table(z_values, csa, levels=None):
    """A CsaTable with only slice, z, CSA and level known."""
    levels = [None] * len(z_values) if levels is None else levels
    return CsaTable([{**dict.fromkeys(SLICE_COLUMNS), "slice": i, "z_mm": float(z), "csa_mm2": float(c), "level": level}
                     for i, (z, c, level) in enumerate(zip(z_values, csa, levels))])


def test_contrast_spread_compares_contrasts_over_their_common_z_range():
    # T1w covers z 0..19 (CSA 60 below 10 mm, 80 above), T2w covers 10..29 at 80: over the shared 10..19 they agree.
    z = np.arange(20.0)
    t1 = csa_table(z, np.where(z < 10, 60.0, 80.0))
    t2 = csa_table(z + 10, np.full(20, 80.0))
    t2s = csa_table(z + 5, np.full(20, 84.0))
    spread = report.contrast_spread({("01", ""): {"T1w": t1, "T2w": t2, "T2star": t2s}, ("02", ""): {"T1w": t1}})
    assert len(spread) == 1  # a subject with one contrast has no spread
    row = spread[0]
    assert (row["subject"], row["level"], row["n_contrasts"]) == ("01", "all", 3)
    assert (row["z_min_mm"], row["z_max_mm"]) == (10.0, 19.0)
    assert row["mean_csa_mm2"] == pytest.approx(244 / 3, abs=1e-3)
    assert row["sd_across_contrasts_mm2"] == pytest.approx(np.std([80, 80, 84], ddof=1), abs=1e-3)
    assert row["range_mm2"] == pytest.approx(4.0)
    assert row["contrast_means_mm2"] == "T1w=80.00 T2star=84.00 T2w=80.00"


def test_contrast_spread_keeps_every_slice_of_contrasts_on_one_grid():
    """A slice's z is its cord centre's, hundredths of a mm apart between two contrasts of one grid: each image
    keeps its end slices (a 1e-3 mm cut dropped both 5 mm end slices of sub-01's MT-off: 85.09 for 84.71)."""
    z = np.arange(20) * 5.0
    ends_smaller = csa_table(z, np.where((z == 0) | (z == 95), 70.0, 80.0))
    shifted = z.copy()
    shifted[0], shifted[-1] = 0.04, 94.97
    (row,) = report.contrast_spread({("01", ""): {"MT-off": ends_smaller, "MT-on": csa_table(shifted, np.full(20, 80.0))}})
    assert row["contrast_means_mm2"] == "MT-off=79.00 MT-on=80.00"


def test_summary_rows_per_level_when_levels_are_known(tmp_path):
    image = bids.describe(tmp_path / "sub-01" / "anat" / "sub-01_T2w.nii.gz")
    table = csa_table(range(6), [70.0 + i for i in range(6)], [2, 2, 2, 3, 3, 3])
    rows = report.summarise(image, table, "sub-01/anat/sub-01_T2w_csa.csv")
    assert [(r["level"], r["n_slices"], r["csa_mm2_mean"]) for r in rows] == [("all", 6, 72.5), ("C2", 3, 71.0), ("C3", 3, 74.0)]
    assert rows[1]["slices"] == "0:2" and rows[0]["contrast"] == "T2w"
    assert all(row["slices_to_check"] == "" for row in rows)
    misread = csa_table(range(0, 30, 5), [70.0, 71.0, 98.0, 73.0, 74.0, 75.0], [2, 2, 2, 3, 3, 3])
    assert [r["slices_to_check"] for r in report.summarise(image, misread, "csa.csv")] == ["2", "2", ""]
    steep = CsaTable([{**row, "angle_ap_deg": 50.0 if row["slice"] == 4 else 10.0, "angle_rl_deg": 5.0}
                      for row in misread.rows])  # slice 4 crossed at over 45 degrees
    assert [r["slices_to_check"] for r in report.summarise(image, steep, "csa.csv")] == ["2 4", "2", "4"]


def test_outputs_of_other_weights_or_options_are_redone(tmp_path):
    options = {"threshold": 0.5, "device": "auto", "largest_component": True}
    assert batch.settings_changed(tmp_path, "b" * 64, options) == ""  # no earlier run
    batch.write_dataset_description(tmp_path, tmp_path, "a" * 64, options)
    assert batch.settings_changed(tmp_path, "b" * 64, options) == "the model changed since the last run"
    assert batch.settings_changed(tmp_path, "a" * 64, options) == ""
    assert batch.settings_changed(tmp_path, "", options) == ""  # a stand-in pipeline: nothing to compare
    assert batch.settings_changed(tmp_path, "a" * 64, {**options, "device": "cpu"}) == ""  # same results
    assert batch.settings_changed(tmp_path, "a" * 64, {**options, "threshold": 0.1, "largest_component": False}) == (
        "largest_component and threshold changed since the last run")
    assert batch.settings_changed(tmp_path, "a" * 64, {**options, "both_polarities": True}) == (
        "--both-polarities changed since the last run")  # a run recorded before the option read once
    assert batch.settings_changed(tmp_path, "a" * 64, {**options, "both_polarities": False}) == ""
    assert batch.settings_changed(tmp_path, "a" * 64, {**options, "reading": batch.READING_REVISION}) == (
        "the segmentation pipeline changed since the last run")  # recorded before zeros at slice edges were outside
    description = tmp_path / "dataset_description.json"
    unrecorded = json.loads(description.read_text())
    del unrecorded["GeneratedBy"][0]["Options"]  # written before the options were recorded
    description.write_text(json.dumps(unrecorded))
    assert batch.settings_changed(tmp_path, "a" * 64, options) == "the last run's options were not recorded"


def segment_file_noting_the_reading(image_path, output_path, **options):
    """The stand-in pipeline, noting beside its output whether it was asked to read both polarities."""
    note = Path(f"{output_path}.reading")
    note.parent.mkdir(parents=True, exist_ok=True)
    note.write_text(repr(options["both_polarities"]))
    return segment_file_with_stand_in(image_path, output_path, **options)


def test_batch_passes_the_reading_to_every_image(tmp_path):
    """Both polarities by default, once with both_polarities=False (softseg batch --no-both-polarities)."""
    axial = np.eye(4)
    for subject in ("01", "02"):
        write_image(phantom_mri((24, 24, 6), axial, 1), axial, tmp_path / "ds" / f"sub-{subject}" / "anat" / f"sub-{subject}_T2w.nii.gz")
    for both in (True, False):
        output = tmp_path / f"out_{both}"
        batch.run_batch(tmp_path / "ds", output, workers=1, segment_file=segment_file_noting_the_reading, quiet=True,
                        both_polarities=both)
        notes = sorted(output.rglob("*.reading"))
        assert len(notes) == 2 and {note.read_text() for note in notes} == {repr(both)}
        recorded = json.loads((output / "dataset_description.json").read_text())["GeneratedBy"][0]["Options"]
        assert recorded["both_polarities"] is both and recorded["reading"] == batch.READING_REVISION


def test_outputs_of_an_interrupted_run_with_other_options_are_redone(tmp_path):
    """Run 1 at threshold 0.5; run 2 at 0.3 stops after sub-01 (as --include does); run 3 at 0.3 redoes sub-02,
    whose outputs are run 1's, and keeps sub-01's. Outputs of a folder with no record are redone."""
    axial = np.eye(4)
    for subject in ("01", "02"):
        write_image(phantom_mri((24, 24, 6), axial, 1), axial, tmp_path / "ds" / f"sub-{subject}" / "anat" / f"sub-{subject}_T2w.nii.gz")
    output = tmp_path / "out"

    def run(threshold, **options):
        result = batch.run_batch(tmp_path / "ds", output, workers=1, segment_file=segment_file_with_stand_in,
                                 quiet=True, threshold=threshold, **options)
        return {Path(r.image.path).parent.parent.name: r.status for r in result.results}

    assert run(0.5) == {"sub-01": "done", "sub-02": "done"}
    assert run(0.3, include=["sub-01*"]) == {"sub-01": "done"}
    assert run(0.3) == {"sub-01": "skipped", "sub-02": "done"}
    assert run(0.3) == {"sub-01": "skipped", "sub-02": "skipped"}
    with pytest.raises(InputError):  # a run refused before any image leaves the record as it was
        run(0.5, discs="{bogus}")
    assert run(0.3) == {"sub-01": "skipped", "sub-02": "skipped"}
    (output / "dataset_description.json").unlink()  # as a run of an earlier version stopped before writing it
    assert run(0.3) == {"sub-01": "done", "sub-02": "done"}
    assert not list(output.rglob(".*tmp*"))


def test_an_image_replaced_by_an_older_file_is_redone(tmp_path):
    """cp -p / rsync -a put another file in place with its own, older time: the outputs are newer than it, but
    its size and time are not those recorded with them."""
    axial = np.eye(4)
    image = write_image(phantom_mri((24, 24, 6), axial, 1), axial, tmp_path / "ds" / "sub-01" / "anat" / "sub-01_T2w.nii.gz")
    output = tmp_path / "out"

    def run():
        result = batch.run_batch(tmp_path / "ds", output, workers=1, segment_file=segment_file_with_stand_in, quiet=True)
        return result.results[0].status

    assert run() == "done"
    assert run() == "skipped"
    write_image(phantom_mri((30, 30, 8), axial, 2), axial, image)  # another scan of another size...
    os.utime(image, ns=(10**18,) * 2)  # ...that keeps its time of 2001
    assert run() == "done"
    assert nib.load(str(next(output.rglob("*_probseg.nii.gz")))).shape == (30, 30, 8)
    assert run() == "skipped"


def test_a_run_on_part_of_the_cohort_keeps_the_other_images_failures(tmp_path):
    axial = np.eye(4)
    good = write_image(phantom_mri((24, 24, 6), axial, 1), axial, tmp_path / "ds" / "sub-01" / "anat" / "sub-01_T2w.nii.gz")
    corrupt = tmp_path / "ds" / "sub-02" / "anat" / "sub-02_T2w.nii.gz"
    corrupt.parent.mkdir(parents=True)
    corrupt.write_bytes(b"not a NIfTI file")
    output = tmp_path / "out"
    for include in ([], ["sub-01/*"]):
        batch.run_batch(tmp_path / "ds", output, workers=1, segment_file=segment_file_with_stand_in, quiet=True,
                        include=include, overwrite=True)
        recorded = batch.read_known_failures(output)
        assert list(recorded) == [str(corrupt)] and recorded[str(corrupt)]["signature"]  # not retried until it changes
    batch.run_batch(tmp_path / "ds", output, workers=1, segment_file=segment_file_with_stand_in, quiet=True,
                    include=["sub-01/*"], threshold=0.3)
    assert batch.read_known_failures(output) == {}  # under other options it may not fail: tried again next time
    corrupt.unlink()  # a failure of an image that is gone is forgotten
    batch.run_batch(tmp_path / "ds", output, workers=1, segment_file=segment_file_with_stand_in, quiet=True)
    assert batch.read_known_failures(output) == {} and good.is_file()


def test_local_workers_leave_stop_signals_to_the_batch():
    """Processes started while the workers start inherit ignored stop signals (Ctrl-C, kill or a closed terminal
    reach the whole process group: only the batch must act, closing its workers instead of each being killed
    mid-write); the batch's own handlers are back after."""
    import signal
    import subprocess
    import sys

    signals = batch.stop_signals()
    assert {signal.SIGINT, signal.SIGTERM} <= set(signals)
    before = {signum: signal.getsignal(signum) for signum in signals}
    ask = [sys.executable, "-c", f"import signal; print([signal.getsignal(s) is signal.SIG_IGN for s in {[int(s) for s in signals]}])"]
    with batch._interrupts_ignored_by_children():
        assert subprocess.run(ask, capture_output=True, text=True).stdout.strip() == str([True] * len(signals))
    assert {signum: signal.getsignal(signum) for signum in signals} == before  # (SIG_IGN already in a background job)
    assert subprocess.run(ask, capture_output=True, text=True).stdout.strip() == str(
        [before[s] is signal.SIG_IGN for s in signals])

    def ignored():
        return all(signal.getsignal(signum) is signal.SIG_IGN for signum in batch.stop_signals())

    client = batch.open_client(1, None)  # the batch's own workers, also once Dask has restarted them
    try:
        assert list(client.run(ignored).values()) == [True]
        client.restart()  # (as after a worker died): started by Dask, not in the batch's window
        assert list(client.run(ignored).values()) == [True]
    finally:
        batch.close_client(client)


# ------------------------------------------------------------------------------------------ the whole batch
@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """The cohort and its first batch run (2 local Dask workers, stand-in model)."""
    root = tmp_path_factory.mktemp("batch") / "ds"
    cohort = build_cohort(root)
    result = batch.run_batch(root, workers=2, segment_file=segment_file_with_stand_in, quiet=True)
    return cohort, root, result


def test_batch_processes_every_good_file_and_reports_the_corrupt_one(first_run, tmp_path):
    cohort, root, result = first_run
    output = root / "derivatives" / "softseg"
    assert result.output_dir == output
    statuses = {Path(r.image.path): r.status for r in result.results}
    assert statuses == {**{p: "done" for p in cohort["good"]}, cohort["corrupt"]: "failed"}
    failure = result.failures[0]
    assert UNREADABLE.search(failure.reason) and str(cohort["corrupt"]) not in failure.reason  # the file is named beside it
    assert not list(output.rglob("sub-ph02_T2w_*"))  # no output, not even a partial one, for the corrupt file
    assert not list(output.rglob(".*tmp*"))  # no temporary file left anywhere
    assert len({r.worker for r in result.results if r.status == "done"}) == 2  # the work was spread over both workers

    # Every output is exactly what `softseg segment` writes for that image.
    for image_path in cohort["good"]:
        record = next(r for r in result.results if Path(r.image.path) == image_path)
        reference = tmp_path / image_path.name
        with stand_in_installed():
            code = cli.main(["segment", str(image_path), "-o", str(reference / "p.nii.gz"), "--mask", str(reference / "m.nii.gz"),
                             "--csa", str(reference / "c.csv"), "--quiet"])
        assert code == 0
        for key, name in (("probseg", "p.nii.gz"), ("mask", "m.nii.gz")):
            written, expected = nib.load(record.outputs[key]), nib.load(str(reference / name))
            np.testing.assert_array_equal(np.asanyarray(written.dataobj), np.asanyarray(expected.dataobj))
            np.testing.assert_array_equal(written.affine, nib.load(str(image_path)).affine)
        assert Path(record.outputs["csa"]).read_text() == (reference / "c.csv").read_text()
        assert Path(record.outputs["qc"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    description = json.loads((output / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative" and description["GeneratedBy"][0]["Name"] == "softseg"
    failures = read_rows(output / batch.FAILURES_FILE, "\t")
    assert [row["file"] for row in failures] == [str(cohort["corrupt"])]


def test_batch_aggregates_csa_and_its_spread_across_contrasts(first_run):
    cohort, root, result = first_run
    summary = read_rows(result.summary_csv)
    whole = {(row["subject"], row["contrast"]): row for row in summary if row["level"] == "all"}
    assert len(whole) == len(cohort["good"])
    for row in whole.values():  # the stand-in cord has a known cross-section, in every grid and orientation
        assert float(row["csa_mm2_mean"]) == pytest.approx(STAND_IN_AREA_MM2, rel=0.02)
        assert int(row["n_slices"]) > 0 and row["file"].endswith("_csa.csv")
    assert ("ph01", "acq-sag_T1w") in whole and whole[("ph01", "acq-sag_T1w")]["session"] == "01"
    spread = {row["subject"]: row for row in read_rows(result.spread_csv)}
    assert set(spread) == ({"ph01", "unf01"} if cohort["has_unf01"] else {"ph01"})
    assert spread["ph01"]["n_contrasts"] == "2" and float(spread["ph01"]["sd_across_contrasts_mm2"]) < 1.0
    if cohort["has_unf01"]:
        assert spread["unf01"]["n_contrasts"] == "3" and float(spread["unf01"]["sd_across_contrasts_mm2"]) < 0.1


def test_batch_report_opens_offline_and_lists_the_failure(first_run):
    cohort, root, result = first_run
    parsed = parse_report(result.report_html)
    assert "softseg" in parsed.title
    assert parsed.sections[:4] == ["failures", "warnings", "spread", "summary"]
    assert str(cohort["corrupt"]) in parsed.cells
    assert any(UNREADABLE.search(cell) for cell in parsed.cells)
    assert not parsed.external
    text = result.report_html.read_text(encoding="utf-8")  # wide tables scroll inside the page at 1280 px
    assert text.count("<table") == text.count('<div class="scroll"><table') == 3 and "overflow-x:auto" in text
    sources = [image["src"] for image in parsed.images]
    assert all(src.startswith("data:image/png;base64,") for src in sources)
    qc = [image for image in parsed.images if image.get("class") == "qc"]
    assert len(qc) == len(cohort["good"])
    subjects_with_plot = 3 if cohort["has_unf01"] else 2
    assert len(sources) == len(qc) + subjects_with_plot
    import base64

    assert all(base64.b64decode(src.split(",", 1)[1])[:4] == b"\x89PNG" for src in sources)


def test_rerun_skips_finished_work_and_redoes_only_what_changed(first_run, capsys):
    cohort, root, result = first_run
    output = root / "derivatives" / "softseg"
    before = {p: p.stat().st_mtime_ns for p in output.rglob("*_label-SC_probseg.nii.gz")}

    # Second run, through the command line: nothing to compute, so no cluster is even started.
    code = cli.main(["batch", str(root), "--workers", "2"])
    captured = capsys.readouterr()
    assert code == 1  # a file failed (from the first run's record, as the corrupt file did not change)
    assert f"{len(cohort['good'])} already done, 1 failed" in captured.out
    assert f"failed: {cohort['corrupt']}" in captured.err and UNREADABLE.search(captured.err)
    assert "(unchanged since it failed: not tried again)" in captured.err
    assert {p: p.stat().st_mtime_ns for p in output.rglob("*_label-SC_probseg.nii.gz")} == before
    assert str(cohort["corrupt"]) in parse_report(output / batch.REPORT_FILE).cells

    # An updated image and an output lost by an interrupted run are redone; nothing else is.
    updated, interrupted = cohort["good"][0], cohort["good"][-1]
    newest_output = max(p.stat().st_mtime_ns for p in output.rglob("*") if p.is_file())
    os.utime(updated, ns=(newest_output + 1000,) * 2)  # edited after its outputs were written
    interrupted_result = next(r for r in result.results if Path(r.image.path) == interrupted)
    Path(interrupted_result.outputs["csa"]).unlink()
    # This time on an existing Dask scheduler (one worker), as on a cluster.
    from dask.distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=batch.DASHBOARD_ADDRESS) as cluster:
        third = batch.run_batch(root, scheduler=cluster.scheduler_address, segment_file=segment_file_with_stand_in)
        assert cluster.scheduler.workers  # run_batch closed its client, not the cluster it was given
    progress = capsys.readouterr().err.splitlines()
    assert len(progress) == len(cohort["good"]) + 1 and progress[-1].startswith(f"[{'#' * 24}] {len(progress)}/{len(progress)} ")
    assert sum(" done " in line for line in progress) == 2 and sum(" failed " in line for line in progress) == 1
    done = sorted(Path(r.image.path) for r in third.results if r.status == "done")
    assert done == sorted([updated, interrupted])
    assert Path(interrupted_result.outputs["csa"]).is_file()
    assert third.count("skipped") == len(cohort["good"]) - 2 and third.count("failed") == 1


def test_batch_command_line_errors_are_one_line(tmp_path, capsys):
    assert cli.main(["batch", str(tmp_path / "missing")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("softseg: error:") and "no such dataset" in error and "\n" not in error
    assert cli.main(["batch", str(tmp_path), "--workers", "0"]) == 2
    assert "--workers must be at least 1" in capsys.readouterr().err
    assert cli.main(["batch", "--help"]) == 0
    assert "--scheduler" in capsys.readouterr().out
    write_image(phantom_mri((16, 16, 6), np.eye(4), 6), np.eye(4), tmp_path / "scans" / "t2.nii.gz")
    assert cli.main(["batch", str(tmp_path / "scans"), "--scheduler", "notaurl"]) == 2  # no port: not an address
    error = capsys.readouterr().err.strip()
    assert "cannot reach the Dask scheduler notaurl" in error and "\n" not in error


def test_a_listed_file_that_is_gone_fails_on_its_own_run_after_run(tmp_path, capsys):
    good = write_image(phantom_mri((16, 16, 6), np.eye(4), 6), np.eye(4), tmp_path / "scans" / "a_t2.nii.gz")
    listing = tmp_path / "cohort.txt"
    listing.write_text(f"{good}\n{tmp_path / 'scans' / 'gone_t2.nii.gz'}\n")
    for run in range(2):  # the second run skips the finished image and does not stop at the missing one
        result = batch.run_batch(listing, workers=1, segment_file=segment_file_with_stand_in, quiet=True)
        assert [r.status for r in result.results] == (["done", "failed"] if run == 0 else ["skipped", "failed"])
        assert "gone_t2.nii.gz" in result.failures[0].image.path
    assert cli.main(["batch", str(listing), "--quiet"]) == 1  # --quiet: no summary; the failure is still named
    captured = capsys.readouterr()
    assert captured.out == "" and "failed:" in captured.err and "gone_t2" in captured.err


def test_batch_without_dask_is_one_error_line(tmp_path, monkeypatch, capsys):
    """Dask is a dependency; an environment that lacks it anyway gets one line, not a traceback."""
    import sys

    monkeypatch.setitem(sys.modules, "dask.distributed", None)  # import dask.distributed now fails
    write_image(phantom_mri((16, 16, 6), np.eye(4), 6), np.eye(4), tmp_path / "scans" / "t2.nii.gz")
    assert cli.main(["batch", str(tmp_path / "scans"), "--quiet"]) == 2
    error = capsys.readouterr().err.strip()
    assert error == "softseg: error: softseg batch needs Dask: pip install 'dask[distributed]>=2024.1'"


def test_batch_volume_picks_from_4d_images_only_and_no_dashboard_port_clash(tmp_path):
    import socket
    import warnings

    folder = tmp_path / "scans"
    anat = write_image(phantom_mri((16, 16, 6), np.eye(4), 6), np.eye(4), folder / "t2.nii.gz")
    series = np.stack([phantom_mri((16, 16, 6), np.eye(4), seed) for seed in range(3)], axis=-1)
    write_image(series, np.eye(4), folder / "dwi.nii.gz")
    with socket.socket() as holder, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:  # Dask's default HTTP port taken, as by another batch running
            holder.bind(("127.0.0.1", 8787))
            holder.listen()
        except OSError:
            pass  # already taken by something else: the same situation
        first = batch.run_batch(folder, workers=1, segment_file=segment_file_with_stand_in, quiet=True)
        assert [(Path(r.image.path).name, r.status) for r in first.results] == [("dwi.nii.gz", "failed"), ("t2.nii.gz", "done")]
        assert "4D with 3 volumes" in first.failures[0].reason and "--volume N (0..2)" in first.failures[0].reason
        second = batch.run_batch(folder, workers=1, volume=2, segment_file=segment_file_with_stand_in, quiet=True)
    assert not [w for w in caught if "in use" in str(w.message)]
    # the new --volume redoes the 4D file that failed (its file did not change); the 3D image is segmented whole
    assert [r.status for r in second.results] == ["done", "done"]
    assert nib.load(second.results[0].outputs["probseg"]).shape == (16, 16, 6)
    assert nib.load(second.results[1].outputs["probseg"]).shape == nib.load(str(anat)).shape


# ------------------------------------------------------------------------------------------ the shipped model
def test_batch_without_a_model_stops_before_starting_workers(tmp_path):
    from SoftSpinalCordSegLib import inference

    try:
        inference.model_dir()
        pytest.skip("a model is installed")
    except ModelNotInstalledError:
        pass
    root = tmp_path / "ds"
    write_image(phantom_mri((16, 16, 6), np.eye(4), 6), np.eye(4), root / "sub-01" / "anat" / "sub-01_T2w.nii.gz")
    with pytest.raises(ModelNotInstalledError, match="no trained model"):
        batch.run_batch(root, quiet=True)
    assert not list((root / "derivatives").rglob("*.nii.gz"))


def test_batch_with_the_shipped_model_matches_softseg_segment(tmp_path):
    from SoftSpinalCordSegLib import inference
    from SoftSpinalCordSegLib.pipeline import segment_file

    try:
        inference.load_network("cpu")
    except ModelNotInstalledError as error:
        pytest.skip(f"no trained model installed yet: {error}")
    root = tmp_path / "ds"
    cohort = build_cohort(root)
    if not cohort["has_unf01"]:
        pytest.skip(f"unf01 images not found under {data_root()} (set SOFTSEG_DATA)")
    result = batch.run_batch(root, workers=2, include=["sub-unf01_*"], device="cpu", quiet=True)
    assert [r.status for r in result.results] == ["done"] * 3, [r.reason for r in result.results]
    for record in result.results:
        expected = tmp_path / f"{record.image.stem}_expected.nii.gz"
        segment_file(record.image.path, expected, device="cpu")
        np.testing.assert_allclose(nib.load(record.outputs["probseg"]).get_fdata(), nib.load(str(expected)).get_fdata(), atol=1e-5)
    spread = read_rows(result.spread_csv)
    assert spread and spread[0]["subject"] == "unf01" and spread[0]["n_contrasts"] == "3"
    print(f"unf01 crops, shipped model: CSA per contrast {spread[0]['contrast_means_mm2']}, SD {spread[0]['sd_across_contrasts_mm2']} mm2")


def test_batch_sct_format_and_disc_labels_found_by_template(tmp_path, capsys):
    """--format sct writes each image's table in SCT's layout beside ours; --discs finds each image's disc
    labels through the template (an image without any is measured without levels)."""
    root = tmp_path / "bids"
    (root).mkdir()
    (root / "dataset_description.json").write_text(json.dumps({"Name": "discs", "BIDSVersion": "1.9.0"}))
    affine = np.eye(4)
    for subject in ("sub-a", "sub-b"):
        write_image(phantom_mri((16, 16, 20), affine, 3), affine, root / subject / "anat" / f"{subject}_T2w.nii.gz")
    discs = np.zeros((16, 16, 20), np.uint8)
    discs[8, 4, 15], discs[8, 4, 8], discs[8, 4, 2] = 3, 4, 5  # C2/C3, C3/C4, C4/C5 behind the cord
    labels = root / "derivatives" / "labels" / "sub-a" / "anat"
    write_image(discs, affine, labels / "sub-a_T2w_label-discs_dlabel.nii.gz")
    template = "derivatives/labels/{folder}/{stem}_label-discs_dlabel.nii.gz"
    result = batch.run_batch(root, workers=1, csa_format="sct", discs=template, segment_file=segment_file_with_stand_in)
    assert [r.status for r in result.results] == ["done", "done"]
    assert f"no disc file for 1 of 2 images (--discs {template}, relative to {root})" in capsys.readouterr().err
    with_discs, without = (read_rows(Path(r.outputs["csa_sct"])) for r in result.results)
    levels = {int(row["Slice (I->S)"]): row["VertLevel"] for row in with_discs}
    assert {s for s, level in levels.items() if level == "3"} == set(range(8, 15))
    assert {s for s, level in levels.items() if level == "4"} == set(range(2, 8))
    assert all(row["VertLevel"] == "" for row in without)
    assert float(with_discs[0]["MEAN(area)"]) == pytest.approx(STAND_IN_AREA_MM2, rel=0.02)
    summary = read_rows(result.summary_csv)
    assert {row["level"] for row in summary if "sub-a" in row["file"]} == {"all", "C3", "C4"}
    assert {row["level"] for row in summary if "sub-b" in row["file"]} == {"all"}
    again = batch.run_batch(root, workers=1, csa_format="sct", segment_file=segment_file_with_stand_in, quiet=True)
    assert [r.status for r in again.results] == ["done", "done"]  # without --discs now: redone, levels gone
    assert all(row["VertLevel"] == "" for row in read_rows(Path(again.results[0].outputs["csa_sct"])))
    with pytest.raises(InputError, match="use {stem} and {folder} only"):
        batch.run_batch(root, workers=1, discs="{subject}.nii.gz", overwrite=True,
                        segment_file=segment_file_with_stand_in, quiet=True)


def test_an_output_folder_that_cannot_be_made_fails_that_image_with_the_reason(tmp_path):
    """A file where an image's output folder should be: that image fails, named, with why; it is retried next
    run (not a bad input file), and the batch goes on."""
    root = tmp_path / "bids"
    write_image(phantom_mri((16, 16, 6), np.eye(4), 6), np.eye(4), root / "sub-01" / "anat" / "sub-01_T2w.nii.gz")
    out = tmp_path / "out"
    first = batch.run_batch(root, output_dir=out, workers=1, segment_file=segment_file_with_stand_in, quiet=True)
    folder = Path(first.results[0].outputs["probseg"]).parent
    assert folder == out / "sub-01" / "anat"
    shutil.rmtree(folder)
    folder.write_text("a file, not a folder")
    again = batch.run_batch(root, output_dir=out, workers=1, segment_file=segment_file_with_stand_in, quiet=True)
    (failed,) = again.failures
    assert failed.reason.endswith(f"cannot write here ({folder} is a file, not a folder)")
    assert not failed.bad_input and folder.read_text() == "a file, not a folder"


def _no_gpu_here(image_path, output_path, **options):
    from SoftSpinalCordSegLib.errors import DeviceError

    raise DeviceError("--device cuda was asked for but no CUDA GPU is available (use --device auto or cpu)")


def test_a_missing_gpu_is_said_once_and_not_held_against_the_images(tmp_path):
    """--device cuda without a GPU: a local batch stops before any work with one error; on a worker (a cluster
    node without one) the image fails but is tried again next run, as the advice to change --device needs."""
    import torch

    from SoftSpinalCordSegLib.errors import DeviceError

    root = tmp_path / "bids"
    image = write_image(phantom_mri((16, 16, 6), np.eye(4), 7), np.eye(4), root / "sub-01" / "anat" / "sub-01_T2w.nii.gz")
    outputs = {kind: str(path) for kind, path in batch.image_outputs(bids.discover(root)[0], tmp_path / "out", "default").items()}
    record = batch.process_image(bids.discover(root)[0], outputs, _no_gpu_here, {})
    assert record["status"] == "failed" and "no CUDA GPU" in record["reason"] and not record["bad_input"]
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: --device cuda works here")
    out = tmp_path / "derivatives"
    with pytest.raises(DeviceError, match="no CUDA GPU"):
        batch.run_batch(root, output_dir=out, device="cuda", quiet=True)
    assert not (out / batch.FAILURES_FILE).exists() and image.is_file()


def test_the_input_folder_is_refused_as_the_output_folder(tmp_path):
    """Derivatives written into the input folder (its dataset_description.json) would make it read as an
    empty BIDS dataset on the next run."""
    folder = tmp_path / "scans"
    write_image(phantom_mri((16, 16, 6), np.eye(4), 8), np.eye(4), folder / "t2.nii.gz")
    for output in (folder, tmp_path / "scans" / ".." / "scans"):
        with pytest.raises(InputError, match="is the input folder"):
            batch.run_batch(folder, output_dir=output, workers=1, segment_file=segment_file_with_stand_in, quiet=True)
    assert sorted(p.name for p in folder.iterdir()) == ["t2.nii.gz"]


def _disk_full(image_path, output_path, **options):
    import errno

    raise OSError(errno.ENOSPC, "No space left on device", output_path)


def test_a_full_disk_fails_the_image_with_what_to_do_and_is_tried_again(tmp_path):
    """As `segment` says it: the file, the reason and the advice, not the exception's repr."""
    root = tmp_path / "bids"
    write_image(phantom_mri((16, 16, 6), np.eye(4), 9), np.eye(4), root / "sub-01" / "anat" / "sub-01_T2w.nii.gz")
    image = bids.discover(root)[0]
    outputs = {kind: str(path) for kind, path in batch.image_outputs(image, tmp_path / "out", "default").items()}
    record = batch.process_image(image, outputs, _disk_full, {})
    assert record["reason"] == f"{outputs['probseg']}: No space left on device; free some disk space and run again"
    assert record["status"] == "failed" and not record["bad_input"]


def segment_file_that_warns(image_path, output_path, **options):
    """The stand-in pipeline, with segment's warning about what it marked (as on an image without a cord)."""
    import dataclasses

    result = segment_file_with_stand_in(image_path, output_path, **options)
    return dataclasses.replace(result, note="the model is unsure this is a spinal cord") if "sub-02" in str(image_path) else result


def test_segments_warnings_reach_the_summary_the_report_and_later_runs(tmp_path, capsys):
    """`segment` warns where the model is unsure the image holds a cord: a batch names those images (its summary's
    warning column, a section of the report, a line at the end), also in runs that skip them."""
    root = tmp_path / "bids"
    for n in (1, 2):
        write_image(phantom_mri((16, 16, 6), np.eye(4), n), np.eye(4), root / f"sub-0{n}" / "anat" / f"sub-0{n}_T2w.nii.gz")
    for run_number in (1, 2):
        result = batch.run_batch(root, workers=1, segment_file=segment_file_that_warns, quiet=True)
        assert [r.status for r in result.results] == (["done"] * 2 if run_number == 1 else ["skipped"] * 2)
        assert [(Path(r.image.path).name, r.note) for r in result.warnings] == [
            ("sub-02_T2w.nii.gz", "the model is unsure this is a spinal cord")]
        warnings = {row["subject"]: row["warning"] for row in read_rows(result.summary_csv)}
        assert warnings == {"01": "", "02": "the model is unsure this is a spinal cord"}
        assert "Warnings (1)" in result.report_html.read_text()
    capsys.readouterr()
    code = cli.main(["batch", str(root)])
    assert code == 0 and capsys.readouterr().err.strip().endswith(
        f"warning: {root / 'sub-02' / 'anat' / 'sub-02_T2w.nii.gz'}: the model is unsure this is a spinal cord")
    assert cli.main(["batch", str(root), "-q"]) == 0 and "warning" not in capsys.readouterr().err  # as segment -q


def segment_file_without_levels(image_path, output_path, **options):
    """The stand-in pipeline with `--levels auto` refused, as on an axial stack or a field without C2."""
    import dataclasses

    from SoftSpinalCordSegLib.vertebrae import DiscLabelling

    result = segment_file_with_stand_in(image_path, output_path, **options)
    return dataclasses.replace(result, labelling=DiscLabelling(refusal="the field of view does not show C2"))


def test_an_image_left_without_levels_says_why_in_the_summary(tmp_path):
    """With --levels auto an image whose discs could not be numbered gets the `all` row only: its warning says why
    (segment prints it; batch kept it in the image's levels picture alone)."""
    root = tmp_path / "bids"
    write_image(phantom_mri((16, 16, 6), np.eye(4), 10), np.eye(4), root / "sub-01" / "anat" / "sub-01_T2w.nii.gz")
    result = batch.run_batch(root, workers=1, segment_file=segment_file_without_levels, quiet=True)
    (row,) = read_rows(result.summary_csv)
    assert row["level"] == "all" and row["warning"] == "no vertebral levels: the field of view does not show C2"
