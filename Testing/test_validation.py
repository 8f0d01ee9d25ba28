"""The shipped model on the validation people with known-truth changes (tools/validation_set.py): lesions
inserted into a real image leave its CSA, and how far an AP squeeze or atrophy of image and mask is followed."""

from __future__ import annotations

import numpy as np
import pytest

SQUEEZE_BAR = 1.35  # measured / true change of CSA after an AP squeeze of the cord to 55 %; the target is 1.05
BAND_SQUEEZE_RANGE = (0.90, 1.10)  # the same for a band of the canal squeezed; the target is 0.95-1.05
ATROPHY_BARS = {"80 %": 1.10, "65 %": 1.18, "50 %": 1.32}  # the same for the cord shrunk to this share of its area


@pytest.fixture(scope="module")
def validation(tool):
    return tool("validation_set")


def _item(validation, name, shared_file):
    item = next(i for i in validation.IMAGES if i.name == name)
    shared_file(item.image), shared_file(item.mask)  # skip, with the reason, where the data are absent
    return item


@pytest.mark.parametrize("name", ["unf01 T2w", "unf01 T1w"])
def test_lesions_and_compression_of_known_truth(validation, data_dir, shared_file, name):
    """Lesions: the target (within 10 %) is met. Compression: the target (the change measured within 5 % of the
    true change) is not met everywhere; the bars stop a regression from what the shipped model measures (model
    card)."""
    result = validation.pathology_check(_item(validation, name, shared_file), data_dir)
    assert 0.90 <= result["lesions like CSF"] <= 1.10
    assert 0.90 <= result["lesions unlike CSF"] <= 1.10
    assert result["squeeze true change"] == pytest.approx(0.67, abs=0.05)
    assert 0.95 <= result["squeeze tracked"] <= SQUEEZE_BAR
    assert BAND_SQUEEZE_RANGE[0] <= result["band squeeze tracked"] <= BAND_SQUEEZE_RANGE[1]


def test_atrophy_of_known_truth(validation, data_dir, shared_file):
    """The cord alone shrunk to 80, 65 and 50 % of its area in an unchanged canal: the model's change of CSA over
    the true change. The target (within 5 %) is not met: the model follows atrophy only in part (model card);
    the bars stop a regression from what the shipped model measures."""
    result = validation.atrophy_check(_item(validation, "unf01 T2w", shared_file), data_dir)
    for area, bar in ATROPHY_BARS.items():
        assert result[f"{area}: true change"] == pytest.approx(int(area[:-2]) / 100, abs=0.05), result
        assert 0.95 <= result[f"{area}: measured / true"] <= bar, result


@pytest.mark.parametrize("name", ["unf01 T1w", "unf01 T2star", "unf01 T2w"])
def test_each_contrast_of_one_held_out_person_reads_within_7_percent(validation, data_dir, shared_file, name):
    """Read in both polarities (the default), unf01's T1w, T2star and T2w each lie within 7 % of the one manual
    mask (read once, T1w reads 0.92 and T2w 1.09: the area would follow the contrast)."""
    result = validation.measure(_item(validation, name, shared_file), data_dir)
    assert result["ratio"] == pytest.approx(1.0, abs=0.07)


def test_held_out_gmchallenge_person_reads_within_7_percent(validation, data_dir, shared_file):
    item = _item(validation, "sub-9584 T2*w run-1", shared_file)
    result = validation.measure(item, data_dir)
    assert result["ratio"] == pytest.approx(1.0, abs=0.07)
    assert result["dice"] >= 0.90


def test_a_tilted_tube_keeps_its_angle_corrected_area(validation):
    """The obliquity check's rotation (validation_set.tilted) turns a straight tube of known area so that it
    crosses the axial slices at 25 degrees, about R-L or (leaning to the side) about A-P; the angle-corrected
    CSA of the turned tube is its true area."""
    from SoftSpinalCordSegLib.morphometry import compute_csa

    x, y = np.meshgrid(np.arange(48) - 24.0, np.arange(48) - 24.0, indexing="ij")
    tube = np.repeat(((x / 5) ** 2 + (y / 4) ** 2 <= 1).astype(np.float32)[..., None], 60, axis=2)
    turned = validation.tilted(tube, np.array([24.0, 24.0, 30.0]), 25, order=1)
    csa = compute_csa(turned, np.eye(4))
    middle = (csa.column("slice") >= 20) & (csa.column("slice") <= 40)
    assert np.median(csa.column("angle_rl_deg")[middle]) == pytest.approx(25, abs=1.5)
    assert np.mean(csa.column("csa_mm2")[middle]) == pytest.approx(tube[..., 30].sum(), rel=0.03)
    leaning = compute_csa(validation.tilted(tube, np.array([24.0, 24.0, 30.0]), 25, order=1, axis=1), np.eye(4))
    middle = (leaning.column("slice") >= 20) & (leaning.column("slice") <= 40)
    assert np.median(leaning.column("angle_ap_deg")[middle]) == pytest.approx(-25, abs=1.5)  # to the side this time
    assert np.median(np.abs(leaning.column("angle_rl_deg")[middle])) < 0.5
    assert np.mean(leaning.column("csa_mm2")[middle]) == pytest.approx(tube[..., 30].sum(), rel=0.03)


def test_a_tilted_image_takes_its_nearest_voxels_or_zeros_from_outside_it(validation):
    image = np.full((8, 40, 12), 100.0, np.float32)  # a thin slab: a 30° turn brings in A-P corners from outside it
    nearest = validation.tilted(image, np.array([4.0, 20.0, 6.0]), 30, order=3)
    zeros = validation.tilted(image, np.array([4.0, 20.0, 6.0]), 30, order=3, zero_fill=True)
    assert np.allclose(nearest, 100.0, atol=1e-3)
    assert zeros[:, 0, 0].max() == 0 and zeros[:, 20, 6].min() == pytest.approx(100.0, abs=1e-3)


def test_thickened_averages_whole_groups_of_voxels_along_an_axis(validation):
    volume = np.arange(7 * 4 * 11, dtype=np.float32).reshape(7, 4, 11)
    slices = validation.thickened(volume, 3)  # axial slices 3 times as thick; the last 2 of 11 dropped
    assert slices.shape == (7, 4, 3)
    np.testing.assert_allclose(slices[..., 1], volume[..., 3:6].mean(axis=-1))
    columns = validation.thickened(volume, 2, axis=0)
    assert columns.shape == (3, 4, 11)
    np.testing.assert_allclose(columns[2], volume[4:6].mean(axis=0))


def test_rician_noise_has_the_asked_sd_relative_to_the_cord(validation):
    """with_rician_noise: the noise's SD is the cord's intensity over the SNR, not the image's; on bright
    tissue the magnitude noise is about Gaussian, with its bias sigma² / 2A."""
    image = np.full((64, 64, 8), 200.0, np.float32)
    mask = np.zeros_like(image)
    mask[20:40, 20:40] = 1
    image[mask > 0] = 400.0  # a bright cord in darker tissue
    noisy = validation.with_rician_noise(image, mask, 10, np.random.default_rng(0))
    outside = noisy[mask == 0]
    assert outside.std() == pytest.approx(40.0, rel=0.03)
    assert outside.mean() == pytest.approx(np.hypot(200.0, 40.0), abs=1.0)


def test_bias_fields_have_the_asked_gain(validation):
    image = np.ones((40, 60, 3), np.float32)
    spacing = (0.5, 1.0, 3.0)
    front_to_back = validation.with_bias_field(image, spacing, validation.BIAS_FIELDS["A-P x4"])
    assert front_to_back[0, -1, 0] / front_to_back[0, 0, 0] == pytest.approx(4.0 ** (59 / 60))  # centres of the end pixels
    assert front_to_back[:, 30, 1] == pytest.approx(np.full(40, 4.0 ** (0.5 / 60)))  # constant along R-L and S
    coil = validation.with_bias_field(image, spacing, validation.BIAS_FIELDS["posterior coil"])
    assert coil[0, 0, 0] == pytest.approx(1 + 3 * np.exp(-0.5 / 40))  # 4x at the back, falling off forwards
    assert coil[0, -1, 0] == pytest.approx(1 + 3 * np.exp(-59.5 / 40))


def test_a_bias_field_leaves_the_csa(validation, data_dir, shared_file):
    """unf01 T1w under a 4x A-P gain, a 3x R-L gain and a posterior coil's fall-off reads within 3 % of its ratio
    as acquired (within 1 % when measured)."""
    result = validation.bias_check(_item(validation, "unf01 T1w", shared_file), data_dir)
    assert list(result) == list(validation.BIAS_FIELDS)
    assert all(value == pytest.approx(1.0, abs=0.03) for value in result.values()), result


def test_noise_of_a_fast_scan_leaves_the_csa(validation, data_dir, shared_file):
    """unf01 T2w at a cord SNR of 20, 10 and 5 reads within 5 % of its ratio as acquired (1.00, 0.99, 0.98)."""
    result = validation.noise_check(_item(validation, "unf01 T2w", shared_file), data_dir)
    assert list(result) == ["SNR 20", "SNR 10", "SNR 5"]
    assert all(value == pytest.approx(1.0, abs=0.05) for value in result.values()), result
