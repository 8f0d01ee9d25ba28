"""Vertebral levels from disc points (discs.py, `--discs`): projection onto the centreline, SCT's numbering, and
the same per-level table as the equivalent level map."""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pytest

from SoftSpinalCordSegLib.discs import (disc_number, disc_points_from_labels, level_map_from_discs,
                                        levels_from_discs, positions_along_centreline)
from SoftSpinalCordSegLib import cli
from SoftSpinalCordSegLib.errors import InputError
from SoftSpinalCordSegLib.morphometry import compute_csa
from SoftSpinalCordSegLib.phantom import CordPhantom, make_phantom_mask

from test_cli import assert_one_line_error, read_csv, run


def straight_centres(n=41, step=1.0):
    return np.column_stack([np.zeros(n), np.zeros(n), (np.arange(n) - n // 2) * step])


def test_disc_names_follow_sct_numbering():
    assert disc_number("C2/C3") == 3 and disc_number("c1-c2") == 2 and disc_number("C7/T1") == 8
    assert disc_number("T12/L1") == 20 and disc_number("L5/S1") == 25
    for bad in ("C2/C4", "C3/C2", "C2", "disc 3"):
        with pytest.raises(InputError, match="not named like C2/C3"):
            disc_number(bad)


def test_each_slice_gets_the_vertebra_between_the_discs_around_it():
    centres = straight_centres()  # S from -20 to 20 mm, one slice a mm
    discs = {3: np.array([0.0, -6.0, 10.0]), 4: np.array([0.0, -6.0, -5.0]), 5: np.array([2.0, -6.0, -15.2])}
    levels = levels_from_discs(discs, centres)
    s = centres[:, 2]
    # C3 from its top disc (S=10, the slice holding a disc belongs to the vertebra above) down to S=-5
    np.testing.assert_array_equal(levels[(s < 10) & (s >= -5)], 3)
    np.testing.assert_array_equal(levels[(s < -5) & (s >= -15)], 4)
    assert np.all(levels[s >= 10] == 0) and np.all(levels[s < -15] == 0)  # above the top, below the bottom disc
    # Slice order does not matter: the same levels with the slices listed from S to I.
    np.testing.assert_array_equal(levels_from_discs(discs, centres[::-1])[::-1], levels)


def test_a_missing_disc_leaves_its_vertebrae_unlabelled_and_wrong_orders_are_refused():
    centres = straight_centres()
    levels = levels_from_discs({2: np.array([0, 0, 15.0]), 3: np.array([0, 0, 5.0]), 5: np.array([0, 0, -10.0])},
                               centres)
    assert set(levels[(centres[:, 2] < 5)]) == {0}  # C3 and C4 cannot be told apart without disc 4
    assert set(levels[(centres[:, 2] >= 5) & (centres[:, 2] < 15)]) == {2}
    with pytest.raises(InputError, match="disc 4 lies above disc 3"):
        levels_from_discs({3: np.array([0, 0, -5.0]), 4: np.array([0, 0, 5.0])}, centres)
    with pytest.raises(InputError, match="at least two disc points"):
        levels_from_discs({3: np.array([0, 0, 0.0])}, centres)


def test_discs_project_onto_a_curved_centreline_not_onto_the_s_axis():
    """A quarter circle (radius 30 mm) bending towards A: a disc 8 mm behind the cord, perpendicular to it at
    45 degrees, gets the arc position of that point (30 * pi / 4), not its S coordinate."""
    angles = np.linspace(0, math.pi / 2, 91)
    centres = np.column_stack([np.zeros_like(angles), 30 * (1 - np.cos(angles)), 30 * np.sin(angles)])
    foot = np.array([0.0, 30 * (1 - math.cos(math.pi / 4)), 30 * math.sin(math.pi / 4)])
    outward = np.array([0.0, -math.cos(math.pi / 4), math.sin(math.pi / 4)])  # away from the centre of the arc
    disc = foot + 8.0 * outward
    assert positions_along_centreline(disc, centres)[0] == pytest.approx(30 * math.pi / 4, abs=0.05)
    beyond = centres[-1] + np.array([0, 5.0, 0])  # past the end: the last segment goes on straight
    assert positions_along_centreline(beyond, centres)[0] == pytest.approx(30 * math.pi / 2 + 5.0, abs=0.05)


def test_disc_labels_give_the_same_per_level_table_as_the_level_map_they_define():
    """Tilted phantom cord (20 degrees AP), discs 10 mm behind it: the level map painted from the discs and the
    discs themselves give identical per-level tables, and each level's summed slice lengths add up."""
    phantom = CordPhantom(area_mm2=70.0, tilt_ap_deg=20.0, length_mm=60.0)
    mask, affine = make_phantom_mask(phantom, (0.8, 0.8, 1.0), "LPS", 0.0)
    tangent = phantom.rotation[:, 2]
    discs = {n: tangent * along + np.array([0.0, -10.0, 0.0]) for n, along in ((2, 24.0), (3, 8.0), (4, -9.0), (5, -26.0))}
    from_discs = compute_csa(mask, affine, discs=discs)
    level_map = level_map_from_discs(discs, mask, affine)
    from_map = compute_csa(mask, affine, levels=level_map)
    assert [row["level"] for row in from_discs.rows] == [row["level"] for row in from_map.rows]
    by_discs, by_map = from_discs.summarize(per_level=True), from_map.summarize(per_level=True)
    assert [row["level"] for row in by_discs.rows] == [2, 3, 4]
    for a, b in zip(by_discs.rows, by_map.rows):
        assert a == b
    # length: each slice's centreline length (slice step / cos(tilt)) summed over a level
    lengths = from_discs.column("length_mm")
    np.testing.assert_allclose(np.median(lengths), 1.0 / math.cos(math.radians(20.0)), rtol=0.01)
    for row in by_discs.rows:
        assert row["length_mm_sum"] == pytest.approx(row["n_slices"] / math.cos(math.radians(20.0)), rel=0.02)


def test_disc_label_image_values_and_blobs():
    labels = np.zeros((5, 5, 30), dtype=np.int16)
    labels[2, 2, 20] = 3
    labels[2, 1:3, 10] = 4  # a two-voxel blob: its centre
    labels[2, 2, 28] = 50  # SCT's pontomedullary junction: not a disc
    points = disc_points_from_labels(labels, np.diag([0.5, 0.5, 2.0, 1.0]))
    assert sorted(points) == [3, 4]
    np.testing.assert_allclose(points[4], [1.0, 0.75, 20.0])
    labels[2, 2, 17:22] = 3  # 10 mm of S-I (5 slices of 2 mm): still a (tall) disc blob
    assert sorted(disc_points_from_labels(labels, np.diag([0.5, 0.5, 2.0, 1.0]))) == [3, 4]
    levels = np.zeros((5, 5, 12), dtype=np.int16)
    for level in range(4):  # a level map on 5 mm slices (PAM50_levels warped to a T2*w): 3 slices, 15 mm a level
        levels[..., 3 * level : 3 * level + 3] = 5 - level
    with pytest.raises(InputError, match="label 2 spans 15 mm"):
        disc_points_from_labels(levels, np.diag([0.5, 0.5, 5.0, 1.0]))


def test_a_level_map_given_as_disc_labels_is_refused(shared_file, tmp_path, capsys):
    """SCT users mix up -vertfile and -discfile: PAM50_levels read as discs moved every level by half a vertebra
    (C3 69.7 mm² instead of 66.4) with exit 0."""
    levels = shared_file("labels/PAM50/PAM50_levels.nii.gz")
    with pytest.raises(InputError, match="is a vertebral level map"):
        disc_points_from_labels(np.asarray(nib.load(str(levels)).dataobj), nib.load(str(levels)).affine)
    code = cli.main(["csa", "-q", str(shared_file("labels/PAM50/PAM50_cord.nii.gz")), "--discs", str(levels), "--perlevel",
                     "-o", str(tmp_path / "csa.csv")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "PAM50_levels.nii.gz: label 1 spans" in err[0]
    assert not (tmp_path / "csa.csv").exists()


def test_csa_with_discs_on_the_command_line(write_phantom, tmp_path, capsys):
    phantom = CordPhantom(area_mm2=70.0, tilt_rl_deg=10.0, length_mm=60.0)
    mask_path, mask, affine = write_phantom(phantom, (0.8, 0.8, 1.0), "RAS")
    labels = np.zeros((40, 40, 40), dtype=np.uint8)  # a coarser grid of its own: disc points are positions
    label_affine = np.diag([2.0, 2.0, 2.0, 1.0])
    label_affine[:3, 3] = -40.0
    for number, s in ((2, 20.0), (3, 4.0), (4, -12.0)):
        labels[20, 15, int(round((s + 40) / 2))] = number
    discs_path = tmp_path / "discs.nii.gz"
    nib.save(nib.Nifti1Image(labels, label_affine), str(discs_path))
    code, out, err = run(["csa", mask_path, "--discs", discs_path, "--perlevel", "-o", tmp_path / "levels.csv"], capsys)
    assert code == 0, err
    rows = read_csv(tmp_path / "levels.csv")
    assert [row["level"] for row in rows] == ["2", "3"] and "C2: CSA" in out
    # The discs 16 mm apart in S project 16 cos^2(10 deg) = 15.5 mm apart along S onto the leaning cord.
    assert all(int(row["n_slices"]) in (15, 16) for row in rows)
    for row in rows:
        assert float(row["csa_mm2_mean"]) == pytest.approx(70.0, rel=0.03)
        assert float(row["length_mm_sum"]) == pytest.approx(int(row["n_slices"]) / math.cos(math.radians(10.0)), rel=1e-3)

    code, _, err = run(["csa", mask_path, "--discs", discs_path, "--levels", discs_path, "-o", tmp_path / "x.csv"], capsys)
    assert_one_line_error(code, err, "either as --levels or as --discs")
    empty = tmp_path / "empty.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.eye(4)), str(empty))
    code, _, err = run(["csa", mask_path, "--discs", empty, "-o", tmp_path / "x.csv"], capsys)
    assert_one_line_error(code, err, "no disc label")
    assert not (tmp_path / "x.csv").exists()


def test_pam50_disc_labels_give_pam50_levels(shared_file):
    """PAM50_label_disc projected onto the PAM50 cord's centreline labels every slice as PAM50_levels does."""
    cord_image = nib.load(str(shared_file("labels/PAM50/PAM50_cord.nii.gz")))
    levels = np.asarray(nib.load(str(shared_file("labels/PAM50/PAM50_levels.nii.gz"))).dataobj)
    disc_image = nib.load(str(shared_file("labels/PAM50/PAM50_label_disc.nii.gz")))
    cervical = slice(600, None)  # C1 to T4 keeps the test short
    cord = np.asarray(cord_image.dataobj, dtype=np.float32)[:, :, cervical]
    affine = cord_image.affine.copy()
    affine[:3, 3] += affine[:3, 2] * 600
    discs = disc_points_from_labels(np.asarray(disc_image.dataobj), disc_image.affine)
    from_discs = compute_csa(cord, affine, discs=discs)
    from_map = compute_csa(cord, affine, levels=levels[:, :, cervical])
    assert [row["level"] for row in from_discs.rows] == [row["level"] for row in from_map.rows]
    assert from_discs.summarize(per_level=True).rows == from_map.summarize(per_level=True).rows


def test_segment_refuses_discs_without_a_csa_table(tmp_path, capsys):
    image = tmp_path / "image.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.float32), np.eye(4)), str(image))
    code, _, err = run(["segment", image, "-o", tmp_path / "prob.nii.gz", "--discs", image], capsys)
    assert_one_line_error(code, err, "also pass --csa")
