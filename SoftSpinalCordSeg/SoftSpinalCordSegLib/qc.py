"""Quality-control mosaic: axial slices of the image around the cord with the soft mask overlaid."""

from __future__ import annotations

import math

import numpy as np

from .io import atomic_path, reorient

CROP_MM = 40.0  # side of the square shown around the cord in each tile
LEGEND_INCHES = {True: 0.6, False: 1.1}  # height of the legend: in one row (wide mosaics) or in three


def qc_mosaic(image: np.ndarray, probability: np.ndarray, affine: np.ndarray, path, tiles: int = 12,
              title: str = "") -> None:
    """Write a PNG mosaic of up to `tiles` axial slices evenly spread along the cord (atomically).

    Both volumes are shown in the closest RAS axes (no resampling), R on the image's right, A up.
    """
    from matplotlib.figure import Figure

    image, canonical = reorient(np.asarray(image, dtype=np.float32), affine, "RAS")
    probability, _ = reorient(np.asarray(probability, dtype=np.float32), affine, "RAS")
    cord_slices = np.flatnonzero(probability.max(axis=(0, 1)) >= 0.5)
    if cord_slices.size == 0:
        cord_slices = np.flatnonzero(probability.max(axis=(0, 1)) > 0)
    if cord_slices.size == 0:
        cord_slices = np.arange(image.shape[2])
    chosen = np.unique(cord_slices[np.linspace(0, cord_slices.size - 1, min(tiles, cord_slices.size)).round().astype(int)])
    spacing = np.linalg.norm(canonical[:3, :3], axis=0)
    half = np.maximum(1, np.round(CROP_MM / 2 / spacing[:2])).astype(int)
    columns = min(6, chosen.size)
    rows = math.ceil(chosen.size / columns)
    width = max(2 * columns, 7.5)
    legend_height = LEGEND_INCHES[width >= 11]
    figure = Figure(figsize=(width, 2.5 * rows + 0.5 + legend_height), dpi=100)
    file_slice = _file_slice_numbering(affine, image.shape[2])
    low, high = np.percentile(image, [1, 99.5])
    for tile, index in enumerate(chosen, start=1):
        axes = figure.add_subplot(rows, columns, tile)
        centre = _cord_centre(probability[:, :, index], image.shape[:2])
        image_tile = _window(image[:, :, index], centre, half, np.nan).T  # NaN: shown as the black background
        mask_tile = _window(probability[:, :, index], centre, half, 0.0).T
        extent_aspect = spacing[1] / spacing[0]
        axes.set_facecolor("black")
        axes.imshow(image_tile, cmap="gray", origin="lower", vmin=low, vmax=high, aspect=extent_aspect)
        overlay = np.ma.masked_less_equal(mask_tile, 0.02)
        axes.imshow(overlay, cmap="autumn", origin="lower", alpha=0.45, vmin=0, vmax=1, aspect=extent_aspect)
        if mask_tile.max() >= 0.5 and mask_tile.min() < 0.5:
            axes.contour(mask_tile, levels=[0.5], colors="cyan", linewidths=0.7)
        axes.set_title(f"slice {file_slice(index)}", fontsize=11)
        axes.set_xticks([])
        axes.set_yticks([])
    figure.suptitle(title or "Cord segmentation QC", fontsize=12)
    _add_legend(figure, one_row=width >= 11)
    figure.tight_layout(rect=(0, legend_height / figure.get_figheight(), 1, 1))
    with atomic_path(path) as temporary:
        figure.savefig(str(temporary), format="png")


def _window(plane, centre, half, fill):
    """plane[c - h : c + h + 1] along both axes, filled with fill where that leaves the slice: every tile covers
    the same CROP_MM square, so that the grid's rows keep their height (a cut-off tile is taller than wide)."""
    padded = np.pad(plane, [(h, h) for h in half], constant_values=fill)
    return padded[tuple(slice(c, c + 2 * h + 1) for c, h in zip(centre, half))]


def _add_legend(figure, one_row: bool) -> None:
    """What the colours mean: the overlay runs from red (low cord probability) to yellow (1)."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    import matplotlib

    autumn = matplotlib.colormaps["autumn"]
    handles = [
        Patch(color=autumn(0.0), alpha=0.6, label="red halo: low cord probability (edge, partial volume)"),
        Patch(color=autumn(1.0), alpha=0.6, label="yellow core: probability near 1"),
        Line2D([], [], color="cyan", linewidth=1.5, label="cyan outline: probability 0.5 (the binary mask's edge)"),
    ]
    figure.legend(handles=handles, loc="lower center", ncol=len(handles) if one_row else 1,
                  fontsize=10, frameon=False, title="R on the right, A up", title_fontsize=10)


def _file_slice_numbering(affine: np.ndarray, count: int):
    """Map a slice index of the RAS-reoriented volume to the file's own slice index (as in the CSA table)."""
    import nibabel.orientations as orientations

    orientation = orientations.io_orientation(affine)
    flipped = orientation[int(np.flatnonzero(orientation[:, 0] == 2)[0]), 1] < 0
    return lambda index: count - 1 - index if flipped else index


def _cord_centre(probability_slice: np.ndarray, shape) -> tuple:
    total = probability_slice.sum()
    if total <= 0:
        return tuple(n // 2 for n in shape)
    grid = np.indices(probability_slice.shape)
    return tuple(int(round((axis * probability_slice).sum() / total)) for axis in grid)
