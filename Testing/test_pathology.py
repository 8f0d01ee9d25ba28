"""Pathology of known truth for training and validation (SoftSpinalCordSegTraining/pathology.py): lesions
change the image inside the cord only, compression and atrophy move image and target alike."""

from __future__ import annotations

import numpy as np
import pytest

from SoftSpinalCordSegTraining import pathology


def _slice(size=64, semi_axes=(6.0, 4.0), csf_radius=11.0):
    """A cord ellipse (array axis 0: left-right, 1: AP) of soft edge in CSF, in tissue: image and cord fraction."""
    yy, xx = np.mgrid[0:size, 0:size] - size / 2 + 0.5
    rho = np.hypot(yy / semi_axes[0], xx / semi_axes[1])
    target = np.clip((1 - rho) * min(semi_axes) + 0.5, 0, 1).astype(np.float32)
    csf = (np.hypot(yy, xx) < csf_radius) & (target < 1)
    image = 0.3 + 0.6 * csf + 0.35 * target  # cord 0.65, CSF 0.9, tissue 0.3
    return image.astype(np.float32), target


def _ap_extent(target, ap_axis=1):
    return (target >= 0.5).any(axis=1 - ap_axis).sum()


def test_lesions_stay_inside_the_cord_and_keep_the_target():
    image, target = _slice()
    lesions = [dict(offset=np.array([0.3, 0.0]), radii_mm=np.array([1.5, 1.0]), sign=1.0, strength=1.0, opacity=1.0)]
    painted = pathology.paint_lesions(image, target, (1.0, 1.0), lesions)
    changed = np.abs(painted - image) > 1e-6
    assert changed.sum() >= 6
    assert (target[changed] > 0).all()  # never outside the cord
    cord, csf = pathology.tissue_levels(image, target, (1.0, 1.0))
    assert csf > cord  # a T2w-like slice: the lesion goes towards the CSF's brightness
    assert painted[changed].max() == pytest.approx(csf, abs=0.05)
    _, kept = pathology.add_lesions(image, target, (1.0, 1.0), np.random.default_rng(0))
    assert np.array_equal(kept, target)


@pytest.mark.parametrize("band_share", [0.0, 1.0])
@pytest.mark.parametrize("ap_factor", [0.4, 0.55, 0.7])
def test_compression_flattens_the_cord_and_its_target_alike(ap_factor, band_share):
    image, target = _slice()
    squeezed, squeezed_target = pathology.compress(image, target, (1.0, 1.0), np.random.default_rng(1), ap_factor=ap_factor,
                                                   band_share=band_share)
    assert _ap_extent(squeezed_target) / _ap_extent(target) == pytest.approx(ap_factor, abs=0.15)
    assert _ap_extent(squeezed_target, ap_axis=0) >= _ap_extent(target, ap_axis=0)  # wider left-right
    assert squeezed_target.sum() < target.sum()
    inside = squeezed_target >= 0.9  # the image moved with the target: the cord's intensity is still there
    assert np.median(squeezed[inside]) == pytest.approx(np.median(image[target >= 0.9]), abs=0.05)


def test_band_squeeze_scales_the_canal_and_only_shifts_the_tissue_beyond_it():
    """ap_band_squeeze compresses the cord and its edge blur by the factor; beyond the band the tissue moves
    towards the cord without being compressed (an A-P ramp keeps its slope there)."""
    image, target = _slice(size=96)
    ramp = 0.01 * np.arange(96, dtype=np.float32)[None, :]  # grey level rising along A-P
    squeezed, squeezed_target = pathology.ap_band_squeeze(image + ramp, target, 0.5, half_width=8)
    assert squeezed_target.sum() / target.sum() == pytest.approx(0.5, abs=0.05)
    assert _ap_extent(squeezed_target) / _ap_extent(target) == pytest.approx(0.5, abs=0.15)
    assert _ap_extent(squeezed_target, ap_axis=0) == _ap_extent(target, ap_axis=0)  # left-right unchanged
    beyond = np.diff(squeezed[:, 66:86], axis=1)  # 18-38 px from the centre, short of the image's edge
    assert beyond == pytest.approx(0.01, abs=1e-3)
    assert squeezed[48, 40] != pytest.approx(image[48, 40] + ramp[0, 40], abs=0.05)  # inside the band: moved


def test_atrophy_shrinks_the_cord_to_half_or_four_fifths_of_its_area():
    image, target = _slice()
    ratios = [pathology.atrophy(image, target, np.random.default_rng(seed))[1].sum() / target.sum() for seed in range(8)]
    assert 0.45 <= min(ratios) and max(ratios) <= 0.85


def test_far_tissue_is_left_alone():
    image, target = _slice(size=96)
    squeezed, _ = pathology.radial_squeeze(image, target, (0.5, 0.5))
    assert np.array_equal(squeezed[:5], image[:5].astype(np.float32))  # beyond the reach: unchanged


def test_no_cord_no_change():
    image = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    target = np.zeros_like(image)
    assert np.array_equal(pathology.radial_squeeze(image, target, (0.5, 0.5))[0], image)
    assert np.array_equal(pathology.paint_lesions(image, target, (1.0, 1.0), pathology.draw_lesions(np.random.default_rng(0))), image)


def test_compression_share_sets_how_often_the_cord_is_squeezed():
    image, target = _slice()
    squeezed = lambda share: sum(  # noqa: E731
        pathology.random_pathology(image, target, (1.0, 1.0), np.random.default_rng(seed), compression=share,
                                   atrophy_share=0.0)[1].sum() < 0.95 * target.sum() for seed in range(40))
    assert squeezed(0.0) == 0
    assert squeezed(1.0) == 40
    assert 8 <= squeezed(0.5) <= 32


def test_inverted_pair_is_the_same_slice_with_its_grey_levels_reversed():
    from SoftSpinalCordSegTraining.synth import real_sample_pair

    image, target = _slice(size=96)
    (first, first_target), (second, second_target) = real_sample_pair(
        image, target, (1.0, 1.0), np.random.default_rng(3), inverted=True)
    assert np.array_equal(first_target, second_target)
    cord = first_target >= 0.9
    assert np.corrcoef(first.ravel(), second.ravel())[0, 1] < -0.95  # one is the other upside down
    assert np.median(first[cord]) != pytest.approx(np.median(second[cord]), abs=0.1)


def test_oblique_sections_lengthen_the_cord_as_a_tilted_cut_does():
    """synth.oblique_section: a cut at 5-60 degrees is the cross-section stretched by 1 / cos(tilt) (1.004-2, 1.28
    on average), mostly along A-P; without the option the geometry is the straight one, draw for draw."""
    from SoftSpinalCordSegTraining.synth import _real_geometry

    image, target = _slice(size=96)
    ratios, ap_growth = [], []
    for seed in range(30):
        straight = _real_geometry(image, target, (1.0, 1.0), np.random.default_rng(seed))[1]
        default = _real_geometry(image, target, (1.0, 1.0), np.random.default_rng(seed), oblique=0.0)[1]
        cut = _real_geometry(image, target, (1.0, 1.0), np.random.default_rng(seed), oblique=1.0)[1]
        assert np.array_equal(straight, default)
        ratios.append(cut.sum() / straight.sum())
        ap_growth.append(_ap_extent(cut) >= _ap_extent(straight))
    assert 0.98 <= min(ratios) and max(ratios) <= 2.1
    assert 1.15 <= np.mean(ratios) <= 1.4
    assert np.mean(ap_growth) >= 0.6
