"""Reading and writing images and masks: geometry kept exactly, every bad input a one-line InputError."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from SoftSpinalCordSegLib import io
from SoftSpinalCordSegLib.errors import InputError
from SoftSpinalCordSegLib.io import Volume, load_labels, load_mask, load_volume, save_like

OBLIQUE_LEFT_HANDED = np.array([
    [-0.78, 0.10, 0.05, 30.0],
    [0.09, 0.77, -0.21, -12.5],
    [0.06, 0.22, 4.80, -80.25],
    [0.0, 0.0, 0.0, 1.0],
])


def random_image(shape=(12, 10, 8), seed=0):
    return np.random.default_rng(seed).random(shape).astype(np.float32)


def write_nifti(path, array, affine, qform_code=1, sform_code=2):
    image = nib.Nifti1Image(array, affine)
    image.set_qform(affine, code=qform_code)
    image.set_sform(affine, code=sform_code)
    nib.save(image, str(path))
    return path


def only_files(folder: Path):
    return sorted(path.name for path in folder.iterdir())


def test_nifti_round_trip_keeps_grid_qform_and_sform(tmp_path):
    array = random_image()
    source = write_nifti(tmp_path / "image.nii.gz", array, OBLIQUE_LEFT_HANDED)
    volume = load_volume(source)
    assert volume.array.shape == array.shape and volume.array.dtype == np.float32
    np.testing.assert_array_equal(volume.array, array)
    np.testing.assert_allclose(volume.affine, OBLIQUE_LEFT_HANDED, atol=1e-5)
    assert np.linalg.det(volume.affine[:3, :3]) < 0  # left-handed stays left-handed

    output = save_like(volume.array > 0.5, volume, tmp_path / "out.nii.gz", dtype=np.uint8)
    written, original = nib.load(str(output)), nib.load(str(source))
    assert written.shape == original.shape and written.get_data_dtype() == np.uint8
    for coded in ("get_qform", "get_sform"):
        matrix, code = getattr(written.header, coded)(coded=True)
        expected, expected_code = getattr(original.header, coded)(coded=True)
        assert int(code) == int(expected_code)
        np.testing.assert_allclose(matrix, expected, atol=1e-6)
    np.testing.assert_array_equal(np.asanyarray(written.dataobj), array > 0.5)
    assert only_files(tmp_path) == ["image.nii.gz", "out.nii.gz"]  # no temporary file left


def test_nifti_with_qform_only_keeps_it(tmp_path):
    affine = np.diag([0.5, 0.5, 5.0, 1.0])
    source = write_nifti(tmp_path / "image.nii", random_image(), affine, qform_code=1, sform_code=0)
    volume = load_volume(source)
    written = nib.load(str(save_like(volume.array, volume, tmp_path / "prob.nii")))
    assert int(written.header["sform_code"]) == 0 and int(written.header["qform_code"]) == 1
    np.testing.assert_allclose(written.affine, affine)


def test_nibabels_header_fixes_are_not_printed(tmp_path, caplog):
    """A negative pixdim made nibabel log "pixdim[1,2,3] should be positive" to the terminal."""
    import logging
    import struct

    source = write_nifti(tmp_path / "image.nii", random_image(), np.diag([0.5, 0.5, 5.0, 1.0]))
    raw = bytearray(source.read_bytes())
    pixdim = list(struct.unpack("<8f", raw[76:108]))
    pixdim[1] = -pixdim[1]
    raw[76:108] = struct.pack("<8f", *pixdim)
    source.write_bytes(bytes(raw))
    with caplog.at_level(logging.INFO, logger="nibabel"):
        volume = load_volume(source)
        save_like(volume.array, volume, tmp_path / "copy.nii.gz")
        load_volume(tmp_path / "copy.nii.gz")
    assert not [record.getMessage() for record in caplog.records] and volume.array.shape == (12, 10, 8)


def test_a_header_without_orientation_gets_a_warning(tmp_path):
    """qform and sform codes 0: nibabel guesses the axes (the third one foot to head), which segment then says."""
    guessed = load_volume(write_nifti(tmp_path / "bare.nii", random_image(), np.diag([0.5, 0.5, 5.0, 1.0]), 0, 0))
    assert "no orientation" in io.orientation_note(guessed)
    oriented = load_volume(write_nifti(tmp_path / "image.nii", random_image(), np.diag([0.5, 0.5, 5.0, 1.0])))
    assert io.orientation_note(oriented) == "" and io.orientation_note(Volume(random_image(), np.eye(4))) == ""


def test_nrrd_is_read_in_ras_and_written_back(tmp_path):
    array = random_image((9, 7, 5))
    image = sitk.GetImageFromArray(np.moveaxis(array, (0, 1, 2), (2, 1, 0)))
    image.SetSpacing((0.7, 0.8, 3.0))
    image.SetOrigin((10.0, -20.0, 30.0))
    image.SetDirection((0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0))  # columns: i -> P, j -> S, k -> L
    sitk.WriteImage(image, str(tmp_path / "image.nrrd"))

    volume = load_volume(tmp_path / "image.nrrd")
    np.testing.assert_array_equal(volume.array, array)
    direction = np.array(image.GetDirection()).reshape(3, 3) * np.array([0.7, 0.8, 3.0])
    expected = np.eye(4)
    expected[:3, :3] = np.diag([-1, -1, 1]) @ direction
    expected[:3, 3] = [-10.0, 20.0, 30.0]
    np.testing.assert_allclose(volume.affine, expected, atol=1e-9)
    # Voxel (i, j, k) -> the same physical point whichever format the output is written in.
    for name in ("copy.nrrd", "copy.nii.gz"):
        copy = load_volume(save_like(volume.array, volume, tmp_path / name))
        np.testing.assert_array_equal(copy.array, array)
        np.testing.assert_allclose(copy.affine, volume.affine, atol=1e-5)


def test_4d_needs_a_volume_index(tmp_path):
    series = np.stack([random_image(seed=seed) for seed in range(3)], axis=-1)
    path = write_nifti(tmp_path / "dwi.nii.gz", series, np.eye(4))
    with pytest.raises(InputError, match=r"4D with 3 volumes.*mean DWI.*--volume N \(0\.\.2\)"):
        load_volume(path)
    picked = load_volume(path, volume_index=2)
    np.testing.assert_array_equal(picked.array, series[..., 2])
    assert picked.volume_index == 2  # named in the QC mosaic's title
    single = write_nifti(tmp_path / "t2.nii.gz", series[..., 0], np.eye(4))
    assert load_volume(single, volume_index=2, index_4d_only=True).volume_index is None
    with pytest.raises(InputError, match="out of range"):
        load_volume(path, volume_index=3)


def bad_files(folder: Path) -> dict:
    """One file per kind of bad input (name -> path)."""
    files = {"missing": folder / "missing.nii.gz", "folder": folder}
    (folder / "notes.txt").write_text("not an image")
    files["unsupported suffix"] = folder / "notes.txt"
    (folder / "text.nii.gz").write_bytes(gzip.compress(b"this is not a NIfTI header at all" * 20))
    files["not an image"] = folder / "text.nii.gz"
    good = write_nifti(folder / "good.nii.gz", random_image((40, 40, 20)), np.eye(4))
    data = good.read_bytes()
    (folder / "truncated.nii.gz").write_bytes(data[: len(data) // 2])
    files["truncated gzip"] = folder / "truncated.nii.gz"
    files["2D"] = write_nifti(folder / "flat.nii.gz", random_image((12, 10)), np.eye(4))
    files["constant"] = write_nifti(folder / "constant.nii.gz", np.full((6, 6, 6), 3.0, np.float32), np.eye(4))
    with_nan = random_image()
    with_nan[3, 3, 3] = np.nan
    files["NaN"] = write_nifti(folder / "nan.nii.gz", with_nan, np.eye(4))
    with_inf = random_image()
    with_inf[1, 2, 3] = np.inf
    files["inf"] = write_nifti(folder / "inf.nii.gz", with_inf, np.eye(4))
    return files


@pytest.mark.parametrize("kind", ["missing", "folder", "unsupported suffix", "not an image", "truncated gzip",
                                  "2D", "constant", "NaN", "inf"])
def test_bad_images_are_one_line_input_errors(tmp_path, kind):
    path = bad_files(tmp_path)[kind]
    with pytest.raises(InputError) as error:
        load_volume(path)
    message = str(error.value)
    assert "\n" not in message and str(path) in message


def test_mask_on_another_grid_or_empty_is_rejected(tmp_path):
    image = load_volume(write_nifti(tmp_path / "image.nii.gz", random_image(), OBLIQUE_LEFT_HANDED))
    shifted = OBLIQUE_LEFT_HANDED.copy()
    shifted[0, 3] += 0.5
    cases = {
        "shape": write_nifti(tmp_path / "shape.nii.gz", random_image((12, 10, 9)), OBLIQUE_LEFT_HANDED),
        "affine": write_nifti(tmp_path / "moved.nii.gz", random_image(), shifted),
    }
    for path in cases.values():
        with pytest.raises(InputError, match="differs from the image grid"):
            load_mask(path, image)
    empty = write_nifti(tmp_path / "empty.nii.gz", np.zeros((12, 10, 8), np.float32), OBLIQUE_LEFT_HANDED)
    with pytest.raises(InputError, match="empty"):
        load_mask(empty, image)
    # A float32-rounded copy of the same grid is accepted, and values are clipped to [0, 1].
    values = random_image() * 1.4 - 0.2  # a spline-resampled soft mask overshoots 0 and 1
    mask = load_mask(write_nifti(tmp_path / "mask.nii.gz", values, OBLIQUE_LEFT_HANDED.astype(np.float32)), image)
    assert mask.array.min() == 0.0 and mask.array.max() == 1.0
    # A binary mask stored as 0/255 is binary; a soft one on a 0..100 scale is refused, not clipped.
    binary = (random_image() > 0.5) * np.float32(255)
    np.testing.assert_array_equal(load_mask(write_nifti(tmp_path / "b.nii.gz", binary, OBLIQUE_LEFT_HANDED), image).array,
                                  binary / 255)
    with pytest.raises(InputError, match="values reach 100"):
        load_mask(write_nifti(tmp_path / "percent.nii.gz", np.round(random_image() * 100), OBLIQUE_LEFT_HANDED), image)


def test_a_soft_mask_on_another_scale_is_refused_but_resampling_overshoot_is_clipped(tmp_path):
    """A cord mask zoomed with a windowed sinc overshoots 1 at its edge (about 1.3) but its core stays at 1; a soft
    mask times 1.4 (its core at 1.4) read 16 % high once clipped."""
    disc = (np.hypot(*np.meshgrid(np.arange(16) - 7.5, np.arange(16) - 7.5, indexing="ij")) < 5).astype(np.float32)
    binary = sitk.GetImageFromArray(np.repeat(disc[None], 4, axis=0))
    zoomed = sitk.Resample(binary, [48, 48, 4], sitk.Transform(), sitk.sitkLanczosWindowedSinc, (0, 0, 0),
                           (1 / 3, 1 / 3, 1), binary.GetDirection(), 0.0, sitk.sitkFloat32)
    resampled = np.transpose(sitk.GetArrayFromImage(zoomed), (2, 1, 0))
    assert resampled.max() > 1.15
    path = write_nifti(tmp_path / "resampled.nii.gz", resampled, np.diag([1 / 3, 1 / 3, 1, 1]))
    assert load_mask(path).array.max() == 1.0
    scaled = write_nifti(tmp_path / "scaled.nii.gz", np.clip(resampled, 0, 1) * 1.4, np.diag([1 / 3, 1 / 3, 1, 1]))
    with pytest.raises(InputError, match="cord voxels lie around 1.40"):
        load_mask(scaled)


def test_label_map_is_rounded_to_integers(tmp_path):
    reference = load_volume(write_nifti(tmp_path / "image.nii.gz", random_image(), np.eye(4)))
    labels = np.zeros((12, 10, 8), np.float32)
    labels[..., :4], labels[..., 4:] = 2.0000001, 3
    loaded = load_labels(write_nifti(tmp_path / "levels.nii.gz", labels, np.eye(4)), reference)
    assert loaded.array.dtype == np.int32 and set(np.unique(loaded.array)) == {2, 3}


def test_failed_write_leaves_no_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    reference = Volume(array=random_image(), affine=np.eye(4))
    target = tmp_path / "prob.nii.gz"
    target.write_bytes(b"previous result")

    def write_half_then_fail(image, filename):
        Path(filename).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(nib, "save", write_half_then_fail)
    with pytest.raises(OSError):
        save_like(reference.array, reference, target)
    assert target.read_bytes() == b"previous result"
    assert only_files(tmp_path) == ["prob.nii.gz"]


def test_output_suffix_decides_the_format(tmp_path):
    reference = Volume(array=random_image(), affine=OBLIQUE_LEFT_HANDED)
    with pytest.raises(InputError, match="unsupported file type"):
        save_like(reference.array, reference, tmp_path / "prob.png")
    assert io.file_format("a/b.NII.GZ") == "nifti" and io.file_format("x.nhdr") == "nrrd"


def test_outputs_get_the_usual_permissions(tmp_path):
    """Outputs are readable as any file the user writes (umask), not private like a temporary file."""
    import os

    reference = Volume(array=random_image(), affine=OBLIQUE_LEFT_HANDED)
    previous = os.umask(0o022)
    try:
        written = save_like(reference.array, reference, tmp_path / "prob.nii.gz")
    finally:
        os.umask(previous)
    assert (written.stat().st_mode & 0o777) == 0o644


def test_output_folder_removed_by_another_process_is_made_again(tmp_path, monkeypatch):
    """A batch worker may remove an empty output folder between our mkdir and our write."""
    import shutil
    import tempfile

    reference = Volume(array=random_image(), affine=OBLIQUE_LEFT_HANDED)
    target = tmp_path / "sub-01" / "anat" / "prob.nii.gz"
    real_mkstemp = tempfile.mkstemp
    calls = []

    def racing_mkstemp(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            shutil.rmtree(tmp_path / "sub-01")  # the other process wins the race once
        return real_mkstemp(*args, **kwargs)

    monkeypatch.setattr(io.tempfile, "mkstemp", racing_mkstemp)
    save_like(reference.array, reference, target)
    assert len(calls) == 2 and load_volume(target).array.shape == reference.array.shape
