"""Analytic spinal-cord phantoms: elliptic cylinders of known cross-section, for tests and the demo.

A phantom is an elliptic tube (cross-section area `area_mm2` perpendicular to its centreline), straight
or bent along a circular arc in the sagittal plane, tilted in AP and RL, and cut by two axial planes
(|S| <= length/2). Its soft mask is the exact partial-volume fraction of each voxel (supersampled only
where the boundary crosses the voxel), on any grid: any voxel size, orientation code, oblique rotation.
`mri_like_image` nests such tubes (cord, CSF, epidural fat, bony canal, body) into a T2w-like image whose
cord has a known cross-section, for the demo of the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional, Sequence, Tuple

import numpy as np

from .io import reorient


@dataclass(frozen=True)
class CordPhantom:
    area_mm2: float = 80.0
    aspect: float = 1.4  # RL / AP diameter ratio of the elliptic cross-section
    tilt_ap_deg: float = 0.0  # centreline leaning towards A, seen in the sagittal plane
    tilt_rl_deg: float = 0.0  # centreline leaning towards R, seen in the coronal plane
    curve_radius_mm: Optional[float] = None  # bend towards A along an arc of this radius (None: straight)
    length_mm: float = 40.0  # extent along S between the two axial caps

    @property
    def semi_axes(self) -> Tuple[float, float]:
        """(RL, AP) semi-axes in mm of the cross-section."""
        ap = math.sqrt(self.area_mm2 / (math.pi * self.aspect))
        return ap * self.aspect, ap

    def area_inside_mm2(self, inset_mm: float) -> float:
        """Area of the cross-section with its edge moved inset_mm inwards (Steiner's formula for the inner
        parallel set, exact while inset_mm is below the smallest radius of curvature, ap^2 / rl)."""
        rl, ap = self.semi_axes
        if not 0 <= inset_mm <= ap * ap / rl:
            raise ValueError(f"inset {inset_mm} mm is outside [0, {ap * ap / rl:.2f}] mm for this cross-section")
        h = ((rl - ap) / (rl + ap)) ** 2
        perimeter = math.pi * (rl + ap) * (1 + 3 * h / (10 + math.sqrt(4 - 3 * h)))  # Ramanujan
        return self.area_mm2 - perimeter * inset_mm + math.pi * inset_mm**2

    @property
    def rotation(self) -> np.ndarray:
        """Columns: the cross-section's RL and AP directions and the tangent at S=0, in RAS."""
        tangent = np.array([math.tan(math.radians(self.tilt_rl_deg)), math.tan(math.radians(self.tilt_ap_deg)), 1.0])
        tangent /= np.linalg.norm(tangent)
        right = np.array([1.0, 0.0, 0.0]) - tangent[0] * tangent
        right /= np.linalg.norm(right)
        return np.column_stack([right, np.cross(tangent, right), tangent])

    def section_coordinates(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) RAS points -> (N, 2) coordinates (RL, AP in mm) in the local cross-section plane."""
        local = points @ self.rotation  # coordinates in the tilted frame
        if self.curve_radius_mm is None:
            return local[:, :2]
        # The arc bends towards +AP around the axis (RL direction) through (0, R, 0) of the local frame.
        radial = self.curve_radius_mm - np.hypot(local[:, 1] - self.curve_radius_mm, local[:, 2])
        return np.column_stack([local[:, 0], radial])

    def inside(self, points: np.ndarray) -> np.ndarray:
        rl, ap = self.semi_axes
        section = self.section_coordinates(points)
        in_tube = (section[:, 0] / rl) ** 2 + (section[:, 1] / ap) ** 2 <= 1.0
        return in_tube & (np.abs(points[:, 2]) <= self.length_mm / 2)

    def boundary_score(self, points: np.ndarray) -> np.ndarray:
        """A lower bound (mm) of the distance from each point to the phantom surface.

        The scaled ellipse rho*E contains E grown by (rho-1)*min semi-axis (Minkowski sum), and the map
        to section coordinates is 1-Lipschitz, so |rho-1|*min(rl, ap) never exceeds the true distance.
        """
        rl, ap = self.semi_axes
        section = self.section_coordinates(points)
        radius = np.hypot(section[:, 0] / rl, section[:, 1] / ap)
        to_tube = np.abs(radius - 1.0) * min(rl, ap)
        to_caps = np.abs(np.abs(points[:, 2]) - self.length_mm / 2)
        return np.minimum(to_tube, to_caps)

    def centreline(self, z_mm: np.ndarray) -> np.ndarray:
        """(N, 3) RAS points of the centreline at the given S positions (for grid bounds and truth)."""
        z_mm = np.asarray(z_mm, dtype=float)
        rotation = self.rotation
        if self.curve_radius_mm is None:
            return np.outer(z_mm / rotation[2, 2], rotation[:, 2])
        # Sample the arc finely and interpolate at the requested S positions.
        radius = self.curve_radius_mm
        angle = np.linspace(-math.pi / 2, math.pi / 2, 2001)
        local = np.column_stack([np.zeros_like(angle), radius - radius * np.cos(angle), radius * np.sin(angle)])
        ras = local @ rotation.T
        order = np.argsort(ras[:, 2])
        return np.column_stack([np.interp(z_mm, ras[order, 2], ras[order, axis]) for axis in range(3)])

    def surface_points(self, count: int = 64) -> np.ndarray:
        """Points on the tube wall between the caps (for the grid's bounding box)."""
        rl, ap = self.semi_axes
        centres = self.centreline(np.linspace(-self.length_mm / 2, self.length_mm / 2, count))
        angle = np.linspace(0, 2 * math.pi, 32, endpoint=False)
        rotation = self.rotation
        ring = np.outer(rl * np.cos(angle), rotation[:, 0]) + np.outer(ap * np.sin(angle), rotation[:, 1])
        # A tilted ring sticks out above/below its centre: widen by the largest semi-axis in every direction.
        return (centres[:, None, :] + ring[None, :, :] * 1.5).reshape(-1, 3)


def rician_noise(image, sigma, rng):
    """|image + complex Gaussian noise of SD sigma|: the noise of a magnitude MR image."""
    return np.hypot(image + sigma * rng.standard_normal(image.shape), sigma * rng.standard_normal(image.shape))


def grid_for(
    phantom: CordPhantom,
    spacing: Sequence[float] = (0.8, 0.8, 0.8),
    oblique_deg: float = 0.0,
    margin_voxels: int = 2,
) -> Tuple[Tuple[int, int, int], np.ndarray]:
    """(shape, affine) of a grid covering the phantom; axes R, A, S rotated by `oblique_deg`.

    `spacing` is given per grid axis (R, A, S before rotation): (0.5, 0.5, 5) is an axial stack,
    (3, 0.8, 0.8) a sagittal one. The oblique rotation turns about an axis mixing R, A and S.
    """
    rotation = _rotation_about(np.array([1.0, 0.6, 0.3]), oblique_deg)
    linear = rotation @ np.diag(np.asarray(spacing, dtype=float))
    voxels = np.linalg.solve(linear, phantom.surface_points().T).T
    low = np.floor(voxels.min(axis=0)) - margin_voxels
    high = np.ceil(voxels.max(axis=0)) + margin_voxels
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = linear @ low
    shape = tuple(int(n) for n in high - low + 1)
    return shape, affine


def _rotation_about(axis: np.ndarray, angle_deg: float) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_rotvec(axis / np.linalg.norm(axis) * math.radians(angle_deg)).as_matrix()


def soft_mask(phantom: CordPhantom, shape, affine: np.ndarray, step_mm: float = 0.15) -> np.ndarray:
    """Partial-volume fraction of each voxel inside the phantom (float32, file voxel order)."""
    affine = np.asarray(affine, dtype=float)
    grid = np.indices(shape, dtype=float).reshape(3, -1).T
    centres = grid @ affine[:3, :3].T + affine[:3, 3]
    fraction = phantom.inside(centres).astype(np.float32)
    corners = np.array(np.meshgrid([-0.5, 0.5], [-0.5, 0.5], [-0.5, 0.5], indexing="ij")).reshape(3, -1)
    half_diagonal = np.linalg.norm(affine[:3, :3] @ corners, axis=0).max()
    # boundary_score never exceeds the true distance to the surface, so only these voxels can be partial.
    boundary = np.flatnonzero(phantom.boundary_score(centres) <= 1.05 * half_diagonal)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    counts = [int(np.clip(math.ceil(s / step_mm), 3, 24)) for s in spacing]
    offsets = np.stack(
        np.meshgrid(*[(np.arange(n) + 0.5) / n - 0.5 for n in counts], indexing="ij"), axis=-1
    ).reshape(-1, 3) @ affine[:3, :3].T
    chunk = max(1, 2_000_000 // len(offsets))
    for start in range(0, len(boundary), chunk):
        voxels = boundary[start:start + chunk]
        points = (centres[voxels, None, :] + offsets[None, :, :]).reshape(-1, 3)
        fraction[voxels] = phantom.inside(points).reshape(len(voxels), -1).mean(axis=1)
    return fraction.reshape(shape)


def make_phantom_mask(
    phantom: CordPhantom,
    spacing: Sequence[float] = (0.8, 0.8, 0.8),
    axcodes: str = "RAS",
    oblique_deg: float = 0.0,
) -> Tuple[np.ndarray, np.ndarray]:
    """(soft mask, affine) of `phantom` sampled on a fresh grid and stored with the given orientation."""
    shape, affine = grid_for(phantom, spacing, oblique_deg)
    mask = soft_mask(phantom, shape, affine)
    return reorient(mask, affine, axcodes)


def is_interior(phantom: CordPhantom, z_mm, margin_mm: float) -> np.ndarray:
    """True where an axial slice at `z_mm` lies at least `margin_mm` inside the caps."""
    return np.abs(np.asarray(z_mm, dtype=float)) <= phantom.length_mm / 2 - margin_mm


# The demo's T2w-like tissues, innermost first: (name, cross-section area in mm², RL/AP aspect, intensity).
# The cord's own area and aspect come from its phantom; CSF is bright, the cord grey, bone dark.
T2W_TISSUES = (
    ("cord", None, None, 0.42),
    ("csf", 200.0, 1.45, 1.0),
    ("epidural fat", 300.0, 1.5, 0.6),
    ("bone", 800.0, 1.3, 0.12),
    ("body", 5700.0, 1.25, 0.32),
)
BODY_OFFSET_MM = (0.0, 12.0, 0.0)  # the neck's centre lies anterior to the canal


def mri_like_image(cord: CordPhantom, shape, affine: np.ndarray, noise: float = 0.03,
                   seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """(T2w-like image, exact cord fraction) on a grid: the cord in its CSF, epidural fat, bony canal and body.

    The tissues are concentric tubes sharing the cord's centreline (the body is a wider, untilted one, shifted
    anterior), each voxel mixing them by its exact partial-volume fractions; the body has a smooth texture,
    everything a mild bias field, and the magnitude of complex Gaussian noise (`noise` x the CSF signal).
    """
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    affine = np.asarray(affine, dtype=float)
    inside = []  # fraction of each voxel inside each tissue's outer boundary, innermost first
    for name, area, aspect, _ in T2W_TISSUES:
        if name == "cord":
            inside.append(soft_mask(cord, shape, affine))
        elif name == "body":
            body = CordPhantom(area_mm2=area, aspect=aspect, length_mm=cord.length_mm)
            shifted = affine.copy()
            shifted[:3, 3] -= BODY_OFFSET_MM
            inside.append(soft_mask(body, shape, shifted, step_mm=0.3))
        else:
            inside.append(soft_mask(replace(cord, area_mm2=area, aspect=aspect), shape, affine, step_mm=0.3))
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    texture = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=2.0 / spacing)
    texture /= texture.std()
    image = np.zeros(shape)
    outside = np.zeros(shape, dtype=np.float32)
    for (name, _, _, intensity), fraction in zip(T2W_TISSUES, inside):
        own = np.clip(fraction - outside, 0.0, 1.0)  # the shell between this boundary and the one inside it
        image += own * intensity * (1.0 + 0.15 * texture if name == "body" else 1.0)
        outside = np.maximum(outside, fraction)
    grid = np.indices(shape).reshape(3, -1).T @ affine[:3, :3].T + affine[:3, 3]
    bias = 1.0 + 0.1 * grid @ rng.normal(size=3) / np.linalg.norm(grid, axis=1).max()
    image *= bias.reshape(shape)
    image = rician_noise(image, noise, rng)
    return (1000.0 * image).astype(np.float32), inside[0]
