"""Faults found by fault injection (tools/fault_injection.py runs the long version): each bad input or
interruption ends in one InputError line (or a clean stop), all outputs or none, nothing replaced."""

from __future__ import annotations

import os
import resource
import signal
import struct
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from SoftSpinalCordSegLib import inference
from SoftSpinalCordSegLib.cli import main, stop_on_signals
from SoftSpinalCordSegLib.errors import InputError, Interrupted, ModelNotInstalledError
from SoftSpinalCordSegLib.io import (Volume, all_or_none, atomic_path, load_mask, load_volume, remove_stale_temporaries,
                                     save_like)
from SoftSpinalCordSegLib.morphometry import compute_csa
from SoftSpinalCordSegLib.pipeline import measure_file, segment_file

nib = pytest.importorskip("nibabel")


def cord_mask(shape=(40, 40, 12)):
    mask = np.zeros(shape, np.float32)
    mask[16:24, 17:23, :] = 1.0
    return mask


def write(path, array, affine=None, sform=True):
    image = nib.Nifti1Image(array, np.eye(4) if affine is None else affine)
    if not sform:
        image.set_sform(None, code=0)
        image.set_qform(image.affine, code=1)
    nib.save(image, str(path))
    return path


def patch_float(path, offset, value):
    """Overwrite one float32 of an uncompressed NIfTI header (as a damaged file would hold it)."""
    raw = bytearray(Path(path).read_bytes())
    raw[offset : offset + 4] = struct.pack("<f", value)
    Path(path).write_bytes(bytes(raw))


PIXDIM_X = 80  # byte offset of pixdim[1] in a NIfTI-1 header
SROW_X = 280  # first value of srow_x


# ------------------------------------------------------------------------------------------ 1-2 sizes from the header
@pytest.mark.parametrize("header_class, shape", [
    (nib.Nifti1Header, (32767, 32767, 32767)), (nib.Nifti2Header, (100000, 100000, 100000)),
    (nib.Nifti1Header, (3000, 3000, 1000)),
])
def test_huge_header_dimensions_are_refused_before_reading(tmp_path, header_class, shape):
    header = header_class()
    header.set_data_shape(shape)
    header.set_data_dtype(np.float32)
    path = tmp_path / "huge.nii"
    path.write_bytes(header.binaryblock + b"\0" * 4096)
    with pytest.raises(InputError, match=r"huge.nii: the header claims .* voxels, more than"):
        load_volume(path)


def test_truncated_data_is_refused_from_the_header(tmp_path):
    path = write(tmp_path / "short.nii", np.random.rand(200, 200, 100).astype(np.float32))
    path.write_bytes(path.read_bytes()[:100_000])
    with pytest.raises(InputError, match="short.nii: the file is truncated"):
        load_volume(path)


def test_huge_voxels_are_refused_before_resampling(tmp_path):
    # 40 x 40 x 8 voxels of 500 mm asked the 1 mm resampling for 24 GB
    path = write(tmp_path / "big.nii.gz", np.random.rand(40, 40, 8).astype(np.float32), np.diag([500, 500, 500, 1]))
    with pytest.raises(InputError, match=r"big.nii.gz: the axial field of view is 2e\+04 x 2e\+04 mm"):
        segment_file(path, tmp_path / "prob.nii.gz")
    with pytest.raises(InputError, match="larger than a body"):
        inference.segment_image(np.random.rand(4, 4, 2), np.diag([2000, 2000, 2000, 1]))
    assert not (tmp_path / "prob.nii.gz").exists()


@pytest.mark.parametrize("shape", [(3, 3, 3), (131, 1, 16)])
def test_images_too_small_to_hold_a_cord_are_refused(tmp_path, shape):
    path = write(tmp_path / "small.nii.gz", np.random.rand(*shape).astype(np.float32))
    with pytest.raises(InputError, match="small.nii.gz: the axial field of view .* too small to hold a spinal cord"):
        segment_file(path, tmp_path / "prob.nii.gz", csa_path=tmp_path / "csa.csv")
    assert not list(tmp_path.glob("prob*")) and not list(tmp_path.glob("csa*"))


# ------------------------------------------------------------------------------------------ 3-4 voxel sizes and types
def test_zero_or_nan_voxel_size_is_refused_not_read_as_1mm(tmp_path):
    for value, name in ((0.0, "zero"), (float("nan"), "nan")):
        path = write(tmp_path / f"{name}.nii", cord_mask(), np.diag([0.5, 0.5, 2, 1]), sform=False)
        patch_float(path, PIXDIM_X, value)
        with pytest.raises(InputError, match=f"{name}.nii: the header gives a voxel size of"):
            load_mask(path)
    path = write(tmp_path / "nan_sform.nii", cord_mask())
    patch_float(path, SROW_X, float("nan"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nibabel's own warnings stay inside
        with pytest.raises(InputError, match="nan_sform.nii: the voxel-to-world matrix .* NaN"):
            load_mask(path)


def test_complex_and_out_of_range_voxels_are_refused_with_the_file_named(tmp_path):
    complex_path = write(tmp_path / "complex.nii.gz", cord_mask().astype(np.complex64))
    with pytest.raises(InputError, match="complex.nii.gz: the voxels are complex"):
        load_volume(complex_path)
    huge = write(tmp_path / "huge.nii.gz", np.linspace(0, 1e300, 1600).reshape(20, 20, 4))
    tiny = write(tmp_path / "tiny.nii.gz", np.random.rand(20, 20, 4) * 1e-300)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(InputError, match=r"huge.nii.gz: voxel values reach 1e\+300, beyond float32"):
            load_volume(huge)
        with pytest.raises(InputError, match="tiny.nii.gz: the voxel values .* differ only below float32"):
            load_volume(tiny)


def test_a_size_of_zero_is_named_as_such(tmp_path):
    path = write(tmp_path / "empty.nii.gz", np.zeros((0, 10, 10), np.float32))
    with pytest.raises(InputError, match="empty.nii.gz: the header gives a size of 0 along axis 0"):
        load_volume(path)


# ------------------------------------------------------------------------------------------ 5 special files, links
def test_a_special_file_is_refused_as_output_and_left_alone(tmp_path):
    mask = write(tmp_path / "mask.nii.gz", cord_mask())
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="fifo: is not a regular file"):
        measure_file(mask, fifo)
    assert fifo.is_fifo()
    if Path("/dev/null").exists():
        with pytest.raises(InputError, match="/dev/null: is not a regular file"):
            measure_file(mask, "/dev/null", plot_path=tmp_path / "plot.png")
        assert not (tmp_path / "plot.png").exists()


def test_an_output_given_as_a_link_replaces_its_target_and_keeps_the_link(tmp_path):
    mask = write(tmp_path / "mask.nii.gz", cord_mask())
    target = tmp_path / "real.csv"
    target.write_text("old\n")
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    measure_file(mask, link)
    assert link.is_symlink() and target.read_text().startswith("slice,")


# ------------------------------------------------------------------------------------------ 6 all outputs or none
def test_an_error_after_some_outputs_leaves_none_and_no_temporary(tmp_path):
    (tmp_path / "b.csv").write_text("previous\n")
    with pytest.raises(KeyboardInterrupt):
        with all_or_none():
            with atomic_path(tmp_path / "a.csv") as temporary:
                temporary.write_text("new a\n")
            with atomic_path(tmp_path / "b.csv") as temporary:
                temporary.write_text("new b\n")
            raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.csv"]
    assert (tmp_path / "b.csv").read_text() == "previous\n"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_mid_run_unwinds_and_removes_the_outputs(tmp_path, signum):
    inherited = signal.signal(signum, signal.SIG_DFL)  # as in a terminal, even when the tests run under nohup
    try:
        with stop_on_signals():
            with pytest.raises(Interrupted):
                with all_or_none():
                    with atomic_path(tmp_path / "first.nii.gz") as temporary:
                        temporary.write_bytes(b"x")
                    os.kill(os.getpid(), signum)
                    time.sleep(2)
    finally:
        signal.signal(signum, inherited)
    assert list(tmp_path.iterdir()) == []


def test_a_signal_ignored_by_nohup_stays_ignored():
    inherited = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with stop_on_signals():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGHUP)  # nothing happens
    finally:
        signal.signal(signal.SIGHUP, inherited)


def test_stale_temporaries_of_a_killed_run_are_removed_by_the_next(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a process that no longer exists
    with atomic_path(tmp_path / "x.csv") as temporary:
        own_tag = temporary.name.split(".")[3]  # .x.csv.HOST-PID.RANDOM.tmp.csv
    stale = tmp_path / f".csa.csv.{own_tag.split('-')[0]}-{gone.pid}.abcd1234.tmp.csv"
    stale.write_text("half")
    foreign = tmp_path / ".csa.csv.ffffff-1.abcd1234.tmp.csv"  # another machine's, recent: kept
    foreign.write_text("other")
    live = tmp_path / f".csa.csv.{own_tag}.efgh5678.tmp.csv"  # this process's: kept
    live.write_text("mine")
    with atomic_path(tmp_path / "csa.csv") as temporary:
        temporary.write_text("done\n")
    assert not stale.exists() and foreign.exists() and live.exists()
    os.utime(foreign, (time.time() - 2 * 86400,) * 2)
    assert remove_stale_temporaries(tmp_path) == 1 and not foreign.exists()


def test_a_full_disk_leaves_no_output_and_names_the_file(tmp_path):
    mask = write(tmp_path / "mask.nii.gz", cord_mask())

    def small_files():  # RLIMIT_FSIZE: writes past 16 KB fail (EFBIG) as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (16_000, 16_000))

    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "SoftSpinalCordSegLib", "csa", "-q", str(mask), "-o",
                           str(tmp_path / "csa.csv"), "--plot", str(tmp_path / "csa.png")],
                          capture_output=True, text=True, env=env, preexec_fn=small_files)
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines() == [f"softseg: error: {tmp_path / 'csa.png'}: File too large; the file is "
                                                "larger than this system allows here: write it elsewhere"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.nii.gz"]


# ------------------------------------------------------------------------------------------ 7-8 model files
def _image(tmp_path):
    rng = np.random.default_rng(0)
    return write(tmp_path / "image.nii.gz", rng.random((32, 32, 4)).astype(np.float32))


def _record(folder):
    weights = folder / inference.WEIGHTS_NAME
    (folder / (inference.WEIGHTS_NAME + ".sha256")).write_text(inference.sha256_of(weights) + "\n")
    inference.cached_network.cache_clear()


def test_damaged_weights_with_a_matching_checksum_are_one_line_errors(random_model, tmp_path, capsys):
    torch = pytest.importorskip("torch")
    image = _image(tmp_path)
    weights = random_model / inference.WEIGHTS_NAME
    good = torch.load(weights, weights_only=True)
    wrong_shape = dict(good)
    name = next(iter(wrong_shape))
    wrong_shape[name] = torch.zeros(3, 3)
    not_a_number = {k: torch.full_like(v, float("nan")) for k, v in good.items()}
    cases = {"garbage": None, "wrong shape": wrong_shape, "other network": {"fc.weight": torch.zeros(2, 2)},
             "NaN": not_a_number}
    for case, state in cases.items():
        if state is None:
            weights.write_bytes(os.urandom(4096))
        else:
            torch.save(state, weights)
        _record(random_model)
        output = tmp_path / f"{case}.nii.gz"
        assert main(["segment", "-q", str(image), "-o", str(output)]) == 2, case
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"softseg: error: {weights}: ") and "reinstall" in err[0], (case, err)
        assert "weights_only" not in err[0] and not output.exists()


def test_a_corrupt_model_card_is_a_one_line_error(random_model):
    (random_model / "model.json").write_text('{"rater_margin_mm": 0.8,')
    with pytest.raises(ModelNotInstalledError, match="model.json: the model card cannot be read"):
        inference.rater_margin_mm()


def test_a_model_folder_that_does_not_exist_is_said(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SOFTSEG_MODEL_DIR", str(tmp_path / "nowhere"))
    assert main(["segment", "-q", str(_image(tmp_path)), "-o", str(tmp_path / "p.nii.gz")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"softseg: error: SOFTSEG_MODEL_DIR={tmp_path / 'nowhere'} does not exist") and "unset it" in err


# ------------------------------------------------------------------------------------------ 9 messages
def test_batch_output_that_is_a_file_is_one_clear_line(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    write(tmp_path / "in" / "a.nii.gz", np.random.rand(20, 20, 4).astype(np.float32))
    taken = tmp_path / "out.txt"
    taken.write_text("x")
    assert main(["batch", "-q", str(tmp_path / "in"), "-o", str(taken)]) == 2
    assert capsys.readouterr().err.strip() == f"softseg: error: {taken}: is a file; --output must be a folder (for the derivatives)"


# ------------------------------------------------------------------------------------------ 11 the Python API
def test_api_bad_input_raises_input_error():
    mask = cord_mask()
    with_nan = mask.copy()
    with_nan[20, 20, 5] = np.nan
    with pytest.raises(InputError, match="1 NaN or infinite voxels"):
        compute_csa(with_nan, np.eye(4))
    for affine in (np.diag([1.0, 1.0, 0.0, 1.0]), np.full((4, 4), np.nan), None, np.eye(3), "eye"):
        with pytest.raises(InputError, match="affine"):
            compute_csa(mask, affine)
        with pytest.raises(InputError, match="affine"):
            inference.segment_image(np.random.rand(32, 32, 4), affine)
    with pytest.raises(InputError, match="smoothing_mm"):
        compute_csa(mask, np.eye(4), smoothing_mm=-5)
    with pytest.raises(InputError, match="no voxels"):
        inference.segment_image(np.zeros((0, 32, 4)), np.eye(4))


def test_outputs_still_overlay_their_input_after_the_checks(tmp_path):
    """The checks refuse nothing real: a qform-only image and an NRRD image read and write as before."""
    volume = Volume(array=cord_mask(), affine=np.diag([0.5, 0.5, 2.0, 1.0]))
    for name in ("mask.nii.gz", "mask.nrrd"):
        save_like(volume.array, volume, tmp_path / name)
        loaded = load_mask(tmp_path / name)
        assert np.allclose(loaded.affine, volume.affine) and np.array_equal(loaded.array, volume.array)
    qform_only = write(tmp_path / "qform.nii", cord_mask(), np.diag([0.5, 0.5, 2, 1]), sform=False)
    assert np.allclose(load_mask(qform_only).spacing, [0.5, 0.5, 2.0])
