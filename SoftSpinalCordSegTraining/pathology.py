"""Pathology with known truth on a real axial slice: intramedullary lesions, compression and atrophy.

Each takes a slice (image, cord fraction) on a grid of `spacing` mm and returns the changed pair. Lesions change
the image only: the cord with a lesion in it is still cord. Compression and atrophy move the image and its
target alike (one backward warp), so the true area of the changed cord is known exactly.
Used by training (synth.py, on 1 mm canvases) and by the validation's known-truth checks (on native slices).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

LESION_PROBABILITY = 0.3
COMPRESSION_PROBABILITY = 0.15
ATROPHY_PROBABILITY = 0.1


def cord_frame(target):
    """Centre (pixels) and semi-axes (pixels, along the two array axes) of the cord's >= 0.5 region, or None."""
    inside = target >= 0.5
    if inside.sum() < 4:
        return None
    centre = np.array(ndimage.center_of_mass(inside))
    offsets = np.argwhere(inside) - centre
    semi_axes = 2 * np.sqrt(np.maximum((offsets ** 2).mean(axis=0), 0.25))  # uniform ellipse: var = a^2 / 4
    return centre, semi_axes


def tissue_levels(image, target, spacing):
    """Median intensity inside the cord and the upper/lower quartile of a 0.5-3 mm ring outside it (CSF)."""
    inside = target >= 0.9
    distance_mm = ndimage.distance_transform_edt(target < 0.5, sampling=spacing)
    ring = (distance_mm > 0.5) & (distance_mm <= 3)
    if inside.sum() < 2 or ring.sum() < 4:
        return None
    cord = float(np.median(image[inside]))
    ring_values = image[ring]
    csf = float(np.percentile(ring_values, 75 if np.median(ring_values) > cord else 25))
    return cord, csf


def draw_lesions(rng, count=None):
    """1-3 lesions: where in the cord (offsets in cord radii), size (ellipse radii 0.5-2 mm, lesions 1-4 mm
    across each way: up to half the cord), intensity (hyper- or hypo-intense to the cord by 0.3-1.3 times the
    cord/CSF step) and opacity."""
    return [{"offset": rng.uniform(-0.7, 0.7, 2), "radii_mm": rng.uniform(0.5, 2.0, 2),
             "sign": float(rng.choice([-1.0, 1.0])), "strength": rng.uniform(0.3, 1.3), "opacity": rng.uniform(0.6, 1.0)}
            for _ in range(count or int(rng.integers(1, 4)))]


def paint_lesions(image, target, spacing, lesions):
    """The image with the lesions painted inside the cord (soft rims, never outside the cord's fraction)."""
    levels, frame = tissue_levels(image, target, spacing), cord_frame(target)
    if levels is None or frame is None:
        return image
    cord, csf = levels
    step = abs(csf - cord) or 0.1 * (abs(cord) + 1e-6)
    centre, semi_axes = frame
    out = image.astype(np.float32).copy()
    yy, xx = np.mgrid[0 : image.shape[0], 0 : image.shape[1]].astype(np.float32)
    for lesion in lesions:
        cy, cx = centre + lesion["offset"] * semi_axes
        ry, rx = lesion["radii_mm"] / np.asarray(spacing, np.float64)
        blob = np.clip(1.5 - np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2), 0, 1)  # 1 inside, soft rim
        weight = blob * np.clip(target, 0, 1) * lesion["opacity"]
        out = out * (1 - weight) + (cord + lesion["sign"] * step * lesion["strength"]) * weight
    return out


def add_lesions(image, target, spacing, rng):
    """Training draw: the slice with random lesions in its cord; the target (the whole cord) is unchanged."""
    return paint_lesions(image, target, spacing, draw_lesions(rng)), target


def radial_squeeze(image, target, factors, reach=2.2, order=1):
    """Image and target warped so that the cord's ellipse becomes `factors` (array axis 0, 1) times as wide;
    the tissue out to `reach` cord radii stretches or compresses to meet the unchanged image beyond."""
    frame = cord_frame(target)
    if frame is None:
        return image, target
    centre, semi_axes = frame
    yy, xx = np.mgrid[0 : image.shape[0], 0 : image.shape[1]].astype(np.float64)
    u, v = (yy - centre[0]) / semi_axes[0], (xx - centre[1]) / semi_axes[1]  # cord radii
    rho = np.hypot(u, v)
    theta = np.arctan2(v, u)
    boundary = 1 / np.hypot(np.cos(theta) / factors[0], np.sin(theta) / factors[1])  # moved cord edge
    source_rho = np.where(rho <= boundary, rho / boundary,
                          np.where(rho <= reach, 1 + (rho - boundary) * (reach - 1) / (reach - boundary), rho))
    scale = np.divide(source_rho, rho, out=np.ones_like(rho), where=rho > 0)
    coords = np.stack([centre[0] + u * scale * semi_axes[0], centre[1] + v * scale * semi_axes[1]])
    warp = lambda a: ndimage.map_coordinates(a.astype(np.float32), coords, order=order, mode="nearest")  # noqa: E731
    return warp(image), np.clip(warp(target), 0, 1)


def ap_band_squeeze(image, target, ap_factor, half_width, ap_axis=1):
    """Image and target compressed along A-P by ap_factor in a band of about half_width pixels either side of
    the cord's centre, fading smoothly to no change beyond: the canal's contents and walls squeezed alike, edge
    blur included, where radial_squeeze moves the cord's edge and stretches the tissue just outside it."""
    frame = cord_frame(target)
    if frame is None:
        return image, target
    centre = frame[0][ap_axis]
    extent = image.shape[ap_axis]
    grid = np.arange(-2.0 * extent, 2.0 * extent, 0.25)  # output offset from the centre (pixels)
    stretch = 1 + (1 / ap_factor - 1) * np.exp(-0.5 * (grid / half_width) ** 4)  # source pixels per output pixel
    source = np.cumsum(stretch) * 0.25
    source -= np.interp(0.0, grid, source)
    coords = np.indices(image.shape).astype(np.float64)
    coords[ap_axis] = centre + np.interp(coords[ap_axis] - centre, grid, source)
    warp = lambda a: ndimage.map_coordinates(a.astype(np.float32), coords, order=1, mode="nearest")  # noqa: E731
    return warp(image), np.clip(warp(target), 0, 1)


def compress(image, target, spacing, rng, ap_axis=1, ap_factor=None, band_share=0.0):
    """The cord flattened to 40-70 % of its AP diameter (10-30 % wider left-right), CSF in front of and behind
    it partly effaced (filled with the tissue around the canal: the cord's edge there is seen by its shape only).
    band_share of the draws squeeze a band of the canal (ap_band_squeeze, 1.3-2.5 cord radii either side of its
    centre) instead of the cord alone; no draw is made when it is 0, so older runs replay exactly."""
    ap_factor = rng.uniform(0.4, 0.7) if ap_factor is None else ap_factor
    factors = [1 + (1 - ap_factor) * rng.uniform(0.2, 0.6)] * 2
    band = bool(band_share) and rng.random() < band_share
    factors[ap_axis] = 1.0 if band else ap_factor  # a band squeeze flattens the cord with its band
    image, target = radial_squeeze(image, target, factors)
    frame = cord_frame(target)
    if band and frame is not None:
        image, target = ap_band_squeeze(image, target, ap_factor, frame[1][ap_axis] * rng.uniform(1.3, 2.5), ap_axis)
        frame = cord_frame(target)
    if frame is None or rng.random() < 0.3:
        return image, target
    distance_mm = ndimage.distance_transform_edt(target < 0.5, sampling=spacing)
    offsets = np.moveaxis(np.indices(image.shape), 0, -1) - frame[0]
    in_front_or_behind = np.abs(offsets[..., ap_axis]) > np.abs(offsets[..., 1 - ap_axis])
    ring = (distance_mm > 0) & (distance_mm <= rng.uniform(1, 3)) & in_front_or_behind
    around = (distance_mm > 4) & (distance_mm <= 8)
    if ring.any() and around.any():
        weight = ring * rng.uniform(0.5, 1.0)
        image = image * (1 - weight) + float(np.median(image[around])) * weight
    return image.astype(np.float32), target


def atrophy(image, target, rng):
    """The cord shrunk to 50-80 % of its area (the CSF around it widened)."""
    factor = np.sqrt(rng.uniform(0.5, 0.8))
    return radial_squeeze(image, target, (factor, factor))


def random_pathology(image, target, spacing, rng, ap_axis=1, compression=COMPRESSION_PROBABILITY,
                     atrophy_share=ATROPHY_PROBABILITY, band_share=0.0):
    """Training draw: a lesion (LESION_PROBABILITY), compression (band_share of it a band squeeze) or atrophy,
    or nothing."""
    draw = rng.random()
    if draw < compression:
        image, target = compress(image, target, spacing, rng, ap_axis, band_share=band_share)
    elif draw < compression + atrophy_share:
        image, target = atrophy(image, target, rng)
    if rng.random() < LESION_PROBABILITY:
        image, target = add_lesions(image, target, spacing, rng)
    return image, target
