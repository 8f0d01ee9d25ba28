"""Synthetic, contrast-randomised axial training slices with exact partial-volume cord targets.

In the spirit of SynthSeg: anatomy comes from label maps (PAM50 template, spine-generic manual masks),
every tissue class gets a random intensity, and the image is rendered at 0.5 mm, blurred by a random
acquisition point-spread function and area-averaged to the model's 1 mm grid. The target is the
area-averaged cord occupancy, i.e. the true partial-volume fraction of cord in each 1 mm pixel.

Real labelled slices (never the validation subject) are mixed in with intensity augmentation.
Training-only code: the shipped extension never imports it at run time.
"""

from __future__ import annotations

import glob
import hashlib
import os

import numpy as np
from scipy import ndimage

from SoftSpinalCordSegLib.model import normalize_slice

from .pathology import random_pathology

HIRES_MM = 0.5  # grid of the label maps and of the rendering
PATCH_HR = 128  # canal patch side in high-resolution pixels (64 mm)
CANVAS_HR = 256  # rendered canvas side in high-resolution pixels (128 mm)
OUT_PX = CANVAS_HR // 2  # training slice side at 1 mm
WINDOW_PX = 64  # side of the cord windows that inference segments (inference.CROP_MM)
# share of slices with one in-plane axis blurred as a 1.5-4 mm acquisition (sagittal or coronal slabs); 0.4
# instead did not reduce how much smaller unf01 T2w reads once its left-right axis is averaged to 3 mm (model card)
THICK_AXIS_FRACTION = 0.15
# magnification of real slices (log-uniform): the labelled subjects' cords are all 67-81 mm2, and with 0.9-1.1
# the network learnt that size, measuring 0.5-0.8 of the true change in CSA of unf01 magnified x0.85-x1.15
REAL_ZOOM_RANGE = (0.7, 1.4)
OBLIQUE_TILT_DEG = (5.0, 60.0)  # the cord's angle to the slice normal in oblique_section
OBLIQUE_THICKNESS_MM = (1.0, 5.0)  # thickness of the simulated oblique slices
# channels of a canal patch, as occupancies in [0, 1]
BONE, CSF, WM, GM = range(4)
VALIDATION_SUBJECT = "unf01"  # never used for training


# --------------------------------------------------------------------------- label sources
def _canonical(path):
    import nibabel as nib

    img = nib.as_closest_canonical(nib.load(path))
    return np.asanyarray(img.dataobj), img.header.get_zooms()[:3]


def pam50_slab_bank(pam50_dir, n_slabs, rng):
    """Random oblique slabs (0.5-8 mm thick) through the PAM50 canal as 4-channel occupancy patches."""
    cord, _ = _canonical(os.path.join(pam50_dir, "PAM50_cord.nii.gz"))
    csf, _ = _canonical(os.path.join(pam50_dir, "PAM50_csf.nii.gz"))
    spine, _ = _canonical(os.path.join(pam50_dir, "PAM50_spine.nii.gz"))
    gm, _ = _canonical(os.path.join(pam50_dir, "PAM50_gm.nii.gz"))
    labels = np.zeros(cord.shape, np.uint8)  # 0 background, 1 bone, 2 csf, 3 wm, 4 gm (later wins)
    labels[spine > 0] = 1
    labels[csf > 0] = 2
    labels[cord > 0] = 3
    labels[(gm > 0.5) & (cord > 0)] = 4
    zs = np.where((csf > 0).any((0, 1)))[0]
    centres = {z: np.array(ndimage.center_of_mass((csf[:, :, z] > 0) | (cord[:, :, z] > 0))) for z in zs}
    bank = np.zeros((n_slabs, 4, PATCH_HR, PATCH_HR), np.float16)
    half = PATCH_HR / 2
    grid = np.mgrid[0:PATCH_HR, 0:PATCH_HR].reshape(2, -1).astype(np.float32) - half
    for n in range(n_slabs):
        z = int(rng.choice(zs))
        tilt = np.deg2rad(rng.uniform(0, 20))
        azimuth = rng.uniform(0, 2 * np.pi)
        normal = np.array([np.sin(tilt) * np.cos(azimuth), np.sin(tilt) * np.sin(azimuth), np.cos(tilt)])
        u = np.cross(normal, [0.0, 1.0, 0.0])
        u /= np.linalg.norm(u)
        v = np.cross(normal, u)
        thickness = float(np.exp(rng.uniform(np.log(0.5), np.log(8.0))))
        offsets = np.arange(max(1, int(round(thickness / HIRES_MM)))) - (max(1, int(round(thickness / HIRES_MM))) - 1) / 2
        centre = np.array([*centres[z], z], np.float32)
        occupancy = np.zeros((5, PATCH_HR * PATCH_HR), np.float32)
        for off in offsets:
            pts = centre[:, None] + u[:, None] * grid[0] + v[:, None] * grid[1] + normal[:, None] * off
            lab = ndimage.map_coordinates(labels, pts, order=0, mode="constant", cval=0)
            occupancy += np.eye(5, dtype=np.float32)[lab].T
        occupancy /= len(offsets)
        bank[n] = occupancy[1:].reshape(4, PATCH_HR, PATCH_HR)
    return bank


def _synthetic_bone(canal, rng):
    """A bony ring around the canal and a vertebral body in front of it, for label maps without bone."""
    inner = rng.uniform(0.5, 2.5) / HIRES_MM
    outer = inner + rng.uniform(2, 6) / HIRES_MM
    dist = ndimage.distance_transform_edt(~canal)
    bone = (dist > inner) & (dist <= outer)
    # vertebral body: ellipse anterior (+A = +axis 1 in RAS) of the canal
    cy, cx = ndimage.center_of_mass(canal)
    yy, xx = np.mgrid[0:canal.shape[0], 0:canal.shape[1]]
    ay = cx + rng.uniform(12, 20) / HIRES_MM
    r1, r2 = rng.uniform(7, 12) / HIRES_MM, rng.uniform(5, 9) / HIRES_MM
    bone |= ((yy - cy) / r1) ** 2 + ((xx - ay) / r2) ** 2 <= 1
    return bone & (dist > inner)


def spinegeneric_bank(label_dir, rng, exclude=VALIDATION_SUBJECT):
    """Axial slices of the spine-generic manual cord (+CSF) masks as 4-channel occupancy patches."""
    patches = []
    for seg_path in sorted(glob.glob(os.path.join(label_dir, "*_seg-manual.nii.gz"))):
        if exclude in os.path.basename(seg_path):
            continue
        subject = os.path.basename(seg_path).split("_")[0]
        cord, zooms = _canonical(seg_path)
        csf_path = os.path.join(label_dir, f"{subject}_T2w_csfseg-manual.nii.gz")
        csf = _canonical(csf_path)[0] if os.path.exists(csf_path) else None
        if csf is not None and csf.shape != cord.shape:
            csf = None
        for k in range(cord.shape[2]):
            c = cord[:, :, k] > 0
            if c.sum() < 20:
                continue
            cy, cx = (int(round(v)) for v in ndimage.center_of_mass(c))
            sl = (slice(cy - PATCH_HR // 2, cy + PATCH_HR // 2), slice(cx - PATCH_HR // 2, cx + PATCH_HR // 2))
            cc = np.pad(c, PATCH_HR)[tuple(slice(s.start + PATCH_HR, s.stop + PATCH_HR) for s in sl)]
            if csf is not None and csf[:, :, k].any():
                ff = np.pad(csf[:, :, k] > 0, PATCH_HR)[tuple(slice(s.start + PATCH_HR, s.stop + PATCH_HR) for s in sl)]
            else:  # no CSF mask: a ring of 1-3 mm around the cord
                ff = ndimage.distance_transform_edt(~cc) <= rng.uniform(1, 3) / HIRES_MM
            ff &= ~cc
            patch = np.zeros((4, PATCH_HR, PATCH_HR), np.float16)
            patch[CSF] = ff
            patch[WM] = cc
            patch[BONE] = _synthetic_bone(cc | ff, rng)
            if rng.random() < 0.5:  # grey-matter core
                core = ndimage.distance_transform_edt(cc) > rng.uniform(1.2, 2.5) / HIRES_MM
                patch[GM] = core
                patch[WM] = cc & ~core
            patches.append(patch)
    return np.stack(patches)


def real_labelled_slices(pairs):
    """(image, mask) axial slices at their own in-plane spacing from real labelled volumes."""
    slices = []
    for image_path, mask_path in pairs:
        image, zooms = _canonical(image_path)
        mask, _ = _canonical(mask_path)
        for k in range(image.shape[2]):
            if mask[:, :, k].sum() > 0:
                slices.append((image[:, :, k].astype(np.float32), mask[:, :, k].astype(np.float32), zooms[:2]))
    return slices


def contrast_partners(slices):
    """For each real slice, the indices of the slices of other images with the same mask and grid: the
    co-registered contrasts of one session, which share one label (SoftSpinalCordSegTraining/pseudo_label.py --consensus)."""
    keys = [(mask.shape, tuple(np.round(spacing, 4)), hashlib.sha1(mask.tobytes()).hexdigest())
            for _, mask, spacing in slices]
    groups = {}
    for n, key in enumerate(keys):
        groups.setdefault(key, []).append(n)
    return [[m for m in groups[key] if not np.array_equal(slices[m][0], slices[n][0])]  # not a repeat of n
            for n, key in enumerate(keys)]


# --------------------------------------------------------------------------- rendering helpers
def smooth_noise(shape, scale_px, rng):
    """Smooth random field with unit-ish amplitude, correlation length about scale_px."""
    low = [max(2, int(s / scale_px)) for s in shape]
    field = rng.standard_normal(low).astype(np.float32)
    return ndimage.zoom(field, [s / l for s, l in zip(shape, low)], order=1, mode="nearest", grid_mode=True)[: shape[0], : shape[1]]


def area_downsample(x, factor=2):
    h, w = x.shape[-2] // factor, x.shape[-1] // factor
    return x[..., : h * factor, : w * factor].reshape(*x.shape[:-2], h, factor, w, factor).mean(axis=(-3, -1))


def _warp_coordinates(rng, out_shape, src_shape, centre_out, scale_range=(0.75, 1.3)):
    """Coordinates in the source patch for each output pixel: rotation, scale, shear, flip, elastic."""
    angle = np.deg2rad(rng.uniform(-30, 30))
    scale = rng.uniform(*scale_range) * np.exp(rng.uniform(-0.1, 0.1, 2))
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    shear = np.array([[1, rng.uniform(-0.1, 0.1)], [0, 1]])
    flip = np.diag([-1.0 if rng.random() < 0.5 else 1.0, 1.0])  # left-right mirror
    matrix = np.linalg.inv(rot @ shear @ np.diag(scale) @ flip)
    yy, xx = np.mgrid[0 : out_shape[0], 0 : out_shape[1]].astype(np.float32)
    rel = np.stack([yy - centre_out[0], xx - centre_out[1]]).reshape(2, -1)
    src = matrix @ rel + np.array(src_shape)[:, None] / 2
    src = src.reshape(2, *out_shape)
    amp = rng.uniform(0, 2.0) / HIRES_MM  # elastic displacement up to 2 mm
    for axis in range(2):
        src[axis] += amp * smooth_noise(out_shape, 20 / HIRES_MM, rng)
    return src


def _body_clutter(rng, shape, canal_centre):
    """Label map of a body outline filled with random tissue classes; 0 is air."""
    n_classes = int(rng.integers(2, 9))
    fields = np.stack([smooth_noise(shape, rng.uniform(6, 40) / HIRES_MM, rng) for _ in range(n_classes)])
    labels = 1 + np.argmax(fields, axis=0)
    if rng.random() < 0.7:  # a neck outline with air around it
        yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
        cy = canal_centre[0] + rng.uniform(-10, 10) / HIRES_MM
        cx = canal_centre[1] + rng.uniform(10, 35) / HIRES_MM  # body centre is anterior of the canal
        ry, rx = rng.uniform(40, 85) / HIRES_MM, rng.uniform(35, 65) / HIRES_MM
        r = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 + 0.15 * smooth_noise(shape, 30 / HIRES_MM, rng)
        labels[r > 1] = 0
        if rng.random() < 0.5:  # subcutaneous fat ring
            labels[(r > rng.uniform(0.7, 0.9)) & (r <= 1)] = n_classes + 1
    return labels, n_classes + 2


def _distractors(rng, shape, forbidden, n_max=10):
    """Discs (vessels, nerve roots, fat) outside the canal: bright or dark round things to ignore."""
    mask = np.zeros(shape, np.int8)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    for n in range(int(rng.integers(0, n_max + 1))):
        r = rng.uniform(1.5, 7) / HIRES_MM
        cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        disc = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) & ~forbidden
        mask[disc] = 1 + (n % 2)
    return mask


# --------------------------------------------------------------------------- samples
def widen_visible_cord(occ, margin_mm):
    """Occupancies whose cord reaches margin_mm further out (into CSF first), for rendering the image only.

    Manual masks sit inside the visible cord edge (raters leave out the partial-volume rim): rendering the
    cord slightly wider than its target teaches the network the raters' edge instead of the intensity edge.
    """
    cord = occ[WM] + occ[GM]
    if margin_mm <= 0 or cord.max() < 0.5:
        return occ
    inside = cord >= 0.5
    # signed distance (pixels) from the edge, which runs half a pixel outside the outermost cord pixels
    signed_px = np.where(inside, 0.5 - ndimage.distance_transform_edt(inside), ndimage.distance_transform_edt(~inside) - 0.5)
    widened = np.clip(0.5 - (signed_px - margin_mm / HIRES_MM), 0, 1)  # one-pixel ramp at the moved edge
    extra = np.clip(widened - cord, 0, None)
    out = occ.copy()
    out[WM] += extra
    out[CSF] = np.clip(out[CSF] - extra, 0, None)
    return out


def csf_flow_voids(shape, rng, probability=0.4):
    """Weight in [0, 1] of smooth patches where pulsating CSF loses its signal (dark or cord-like CSF in
    gradient-echo and T2w images): teaches the network the cord's shape, not only its contrast with CSF."""
    if rng.random() >= probability:
        return np.zeros(shape, np.float32)
    field = smooth_noise(shape, rng.uniform(3, 10) / HIRES_MM, rng)
    return np.clip((field - rng.uniform(-0.5, 1.0)) * rng.uniform(1, 4), 0, 1)


def synthetic_sample(patch, rng, rater_margin_mm=0.0):
    """Render one 1 mm training slice (image, cord fraction) from a 4-channel canal patch.

    rater_margin_mm: the image's cord edge lies this far outside the target's (see widen_visible_cord).
    """
    centre = np.array([CANVAS_HR / 2, CANVAS_HR / 2]) + rng.uniform(-35, 35, 2) / HIRES_MM
    coords = _warp_coordinates(rng, (CANVAS_HR, CANVAS_HR), patch.shape[1:], centre)
    occ = np.stack([ndimage.map_coordinates(c.astype(np.float32), coords, order=1, mode="constant") for c in patch])
    target = np.clip(area_downsample(occ[WM] + occ[GM]), 0, 1)
    occ = widen_visible_cord(occ, rater_margin_mm)
    negative = rng.random() < 0.05  # canal without cord (below the conus): teach "no cord here"
    if negative:
        occ[CSF] += occ[WM] + occ[GM]
        occ[WM] = occ[GM] = 0
    canal = occ.sum(0)
    background, n_bg = _body_clutter(rng, canal.shape, centre)
    forbidden = ndimage.binary_dilation(canal > 0.05, iterations=4)
    discs = _distractors(rng, canal.shape, forbidden)

    mu = rng.uniform(0, 1, n_bg).astype(np.float32)
    if rng.random() < 0.8:
        mu[0] = rng.uniform(0, 0.08)  # air is dark in most acquisitions
    csf_mu, wm_mu = rng.uniform(0, 1, 2)
    while abs(csf_mu - wm_mu) < 0.15:  # the cord/CSF boundary is visible in every usable contrast
        csf_mu, wm_mu = rng.uniform(0, 1, 2)
    gm_mu = wm_mu + (rng.uniform(-0.25, 0.25) if rng.random() < 0.6 else 0.0)
    bone_mu = rng.uniform(0, 1)
    disc_mu = [csf_mu if rng.random() < 0.5 else rng.uniform(0, 1), rng.uniform(0, 1)]

    def textured(value, strength):
        return value * (1 + strength * smooth_noise(canal.shape, rng.uniform(2, 10) / HIRES_MM, rng))

    image = mu[background] * (1 + rng.uniform(0, 0.15) * smooth_noise(canal.shape, rng.uniform(2, 12) / HIRES_MM, rng))
    for d in (1, 2):
        image = np.where(discs == d, disc_mu[d - 1], image)
    voids = csf_flow_voids(canal.shape, rng)
    csf_value = csf_mu + voids * (rng.uniform(0, 1) - csf_mu)
    tissue = {BONE: bone_mu, CSF: csf_value, WM: wm_mu, GM: gm_mu}
    image = image * (1 - np.clip(canal, 0, 1))
    for channel, value in tissue.items():
        image += occ[channel] * textured(value, rng.uniform(0, 0.08))

    image = _acquire(image, rng)
    if negative:
        target[:] = 0
    image, target = _field_of_view(image, target, centre / 2, rng)
    return normalize_slice(image), target.astype(np.float32)


def _acquire(image, rng):
    """Point-spread blur of a random acquisition (anisotropic for thick sagittal slices), 1 mm sampling,
    bias field, noise (Gaussian or Rician) and gamma."""
    res = rng.uniform(0.5, 1.5, 2)
    if rng.random() < THICK_AXIS_FRACTION:
        res[int(rng.integers(2))] = rng.uniform(1.5, 4)
    sigma_hr = np.sqrt(np.maximum(res**2 - HIRES_MM**2, 0)) / 2.355 / HIRES_MM
    image = ndimage.gaussian_filter(image, sigma_hr)
    image = area_downsample(image)
    image = image * np.exp(rng.uniform(0, 0.5) * smooth_noise(image.shape, rng.uniform(30, 100), rng))
    sigma = rng.uniform(0, 0.06) * max(image.max(), 1e-3)
    noisy = image + sigma * rng.standard_normal(image.shape)
    if rng.random() < 0.5:
        noisy = np.hypot(noisy, sigma * rng.standard_normal(image.shape))
    image = np.clip(noisy, 0, None)
    image = image / max(image.max(), 1e-6)
    return image ** np.exp(rng.uniform(-0.5, 0.5))


def _field_of_view(image, target, centre_px, rng):
    """Sometimes keep only a small window around the canal, edge-padded back to full size (tiny FOVs)."""
    if rng.random() >= 0.25:
        return image, target
    half = rng.uniform(10, 30)
    c = centre_px + rng.uniform(-8, 8, 2)
    lo = np.clip((c - half).astype(int), 0, image.shape[0] - 8)
    hi = np.clip((c + half).astype(int), lo + 8, image.shape[0])
    window = (slice(lo[0], hi[0]), slice(lo[1], hi[1]))
    pad = [(lo[0], image.shape[0] - hi[0]), (lo[1], image.shape[1] - hi[1])]
    mode = "edge" if rng.random() < 0.8 else "constant"
    return np.pad(image[window], pad, mode=mode), np.pad(target[window], pad, mode="constant")


def real_sample(image, mask, spacing, rng, pathology=False, oblique=0.0):
    """A real labelled slice resampled to 1 mm with spatial and intensity augmentation (and, with pathology,
    sometimes a lesion, compression or atrophy of known truth: pathology.random_pathology)."""
    img, tgt, centre_out = _real_geometry(image, mask, spacing, rng, pathology, oblique)
    return _cropped(_real_intensity(img, rng), tgt, centre_out, rng)


def real_sample_pair(image, mask, spacing, rng, pathology=False, inverted=False, oblique=0.0):
    """Two versions of one real labelled slice: same geometry, field of view and target, each with its own
    intensities, the second always remapped to another "contrast" (for the consistency loss), or, inverted,
    the first with its grey levels reversed (T1w-like against T2w-like: the network read the inverted
    image of a T2w up to 4 % smaller)."""
    img, tgt, centre_out = _real_geometry(image, mask, spacing, rng, pathology, oblique)
    first = _real_intensity(img, rng)
    versions = [first, -first if inverted else _real_intensity(img, rng, remap_probability=1.0)]
    return same_draws(rng, lambda version: _cropped(version, tgt, centre_out, rng), versions)


def real_sample_across(image, other, mask, spacing, rng, pathology=False, oblique=0.0):
    """Two co-registered contrasts of one real slice sharing one label: same geometry, field of view and
    target, each with its own intensity augmentation (for the consistency loss)."""
    (img, tgt, centre_out), (img_other, _, _) = same_draws(
        rng, lambda version: _real_geometry(version, mask, spacing, rng, pathology, oblique), [image, other])
    versions = [_real_intensity(img, rng), _real_intensity(img_other, rng)]
    return same_draws(rng, lambda version: _cropped(version, tgt, centre_out, rng), versions)


def same_draws(rng, apply, items):
    """apply(item) for every item with the same random draws (rng rewound before each), so that one
    augmentation falls alike on every version of a slice."""
    state = rng.bit_generator.state
    results = []
    for item in items:
        rng.bit_generator.state = state
        results.append(apply(item))
    return results


def _cropped(img, tgt, centre_out, rng):
    """The training pair after the field-of-view cut: normalised image, target in [0, 1]."""
    img, tgt = _field_of_view(img, tgt, centre_out, rng)
    return normalize_slice(img), np.clip(tgt, 0, 1).astype(np.float32)


def oblique_section(rng):
    """An axial slice cutting the cord at a tilt (lordosis, scoliosis, an angled acquisition): (stretch, smear).
    The cut of a tube tilted by t is its cross-section stretched by 1 / cos(t) along the tilt's in-plane
    direction (mostly A-P), and a slice of thickness h averages it over h * tan(t) along that direction.
    stretch: 2x2 map from the section (mm) to the cord's cross-section; smear: the offsets (mm, in the
    section) averaged over for the slice's thickness."""
    tilt = np.deg2rad(rng.uniform(*OBLIQUE_TILT_DEG))
    azimuth = rng.normal(0, np.deg2rad(20)) if rng.random() < 0.7 else rng.uniform(0, np.pi)  # from A-P
    direction = np.array([np.sin(azimuth), np.cos(azimuth)])  # canonical slices: axis 0 R-L, axis 1 A-P
    stretch = np.eye(2) + (np.cos(tilt) - 1) * np.outer(direction, direction)
    length = rng.uniform(*OBLIQUE_THICKNESS_MM) * np.tan(tilt)
    smear = np.outer(np.linspace(-length / 2, length / 2, 5), direction)
    return stretch, smear


def _real_geometry(image, mask, spacing, rng, pathology=False, oblique=0.0):
    """The slice and its mask rotated, flipped and magnified onto the 1 mm training canvas (an oblique share
    of them cut as an oblique_section; then, with pathology, changed by pathology.random_pathology: the
    canvas's second axis is within 20 degrees of A-P)."""
    scale = np.array(spacing, np.float64)  # source mm per pixel
    centre_src = np.array(ndimage.center_of_mass(mask > 0.5))
    out = OUT_PX
    centre_out = np.array([out / 2, out / 2]) + rng.uniform(-35, 35, 2)
    angle = np.deg2rad(rng.uniform(-20, 20))
    zoom = np.exp(rng.uniform(*np.log(REAL_ZOOM_RANGE)))
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    flip = np.diag([-1.0 if rng.random() < 0.5 else 1.0, 1.0])
    stretch, smear = np.eye(2), np.zeros((1, 2))
    if oblique and rng.random() < oblique:  # no draw when off: runs recorded before the option replay exactly
        stretch, smear = oblique_section(rng)
    yy, xx = np.mgrid[0:out, 0:out].astype(np.float64)
    rel = np.stack([yy - centre_out[0], xx - centre_out[1]]).reshape(2, -1)
    section_mm = rot @ flip @ rel / zoom  # output pixel -> mm in the (oblique) section, source axes
    to_source_px = np.diag(1 / scale) @ stretch
    background = float(np.percentile(image, 1))
    img, tgt = 0.0, 0.0
    for offset in smear:  # the slice's thickness: the section averaged over offsets along the tilt
        coords = (to_source_px @ (section_mm + offset[:, None]) + centre_src[:, None]).reshape(2, out, out)
        img = img + ndimage.map_coordinates(image, coords, order=1, mode="constant", cval=background)
        tgt = tgt + ndimage.map_coordinates(mask, coords, order=1, mode="constant")
    img, tgt = img / len(smear), tgt / len(smear)
    if pathology:  # True, or the keyword arguments of random_pathology (its probabilities)
        img, tgt = random_pathology(img, tgt, (1.0, 1.0), rng, ap_axis=1, **(pathology if isinstance(pathology, dict) else {}))
    return img, tgt, centre_out


def _real_intensity(img, rng, remap_probability=0.5):
    """Scaled intensities, sometimes remapped (monotone or inverting: another "contrast"), bias field, noise."""
    img = np.clip(img / max(np.percentile(img, 99.5), 1e-6), 0, None)
    if rng.random() < remap_probability:
        knots = np.sort(rng.uniform(0, 1, 4))
        values = rng.uniform(0, 1, 6)
        img = np.interp(np.clip(img, 0, 1.5), np.concatenate([[0], knots, [1.5]]), values)
    img = img * np.exp(rng.uniform(0, 0.4) * smooth_noise(img.shape, rng.uniform(30, 100), rng))
    return img + rng.uniform(0, 0.04) * rng.standard_normal(img.shape)


def cord_window(image, target, rng, size=WINDOW_PX):
    """A size x size window of a training slice that contains the cord (or the canvas centre without one):
    teaches the network the small windows that inference segments around the located cord."""
    if target.max() >= 0.5:
        centre = np.array(ndimage.center_of_mass(target >= 0.5))
    else:
        centre = np.array(target.shape) / 2
    origin = np.round(centre + rng.uniform(-size / 4, size / 4, 2)).astype(int) - size // 2
    origin = np.clip(origin, 0, np.array(target.shape) - size)
    window = (slice(origin[0], origin[0] + size), slice(origin[1], origin[1] + size))
    return normalize_slice(image[window]), target[window]


def pair_count(share, size):
    """Pairs of versions of one real slice in a batch of size whose given share is paired (True: all)."""
    return int(round(float(share) * size / 2))


class SliceGenerator:
    """Mixes synthetic slices from PAM50 and spine-generic label maps with real labelled slices."""

    def __init__(self, data_dir, seed=0, n_pam50=1500, real_pairs=None, weights=(0.5, 0.4, 0.1),
                 rater_margin_mm=0.0, window_fraction=0.0, window_sizes=(WINDOW_PX,), paired=False,
                 cross_contrast=0.0, pathology=False, inverted_pairs=0.0, oblique=0.0):
        self.pathology = pathology  # real slices sometimes get a lesion, compression or atrophy
        self.oblique = oblique  # share of the real slices cut as oblique sections
        self.inverted_pairs = inverted_pairs  # share of the consistency pairs made of a slice and its inverse
        self.rater_margin_mm = rater_margin_mm
        self.window_fraction = window_fraction
        self.window_sizes = list(window_sizes)
        self.paired = paired  # share of each batch made of real slices in two versions each (True: all of it)
        self.cross_contrast = cross_contrast  # share of those pairs made of two real contrasts (real_sample_across)
        self.rng = np.random.default_rng(seed)
        labels = os.path.join(data_dir, "labels")
        self.banks = [
            pam50_slab_bank(os.path.join(labels, "PAM50"), n_pam50, self.rng),
            spinegeneric_bank(os.path.join(labels, "spinegeneric10"), self.rng),
        ]
        self.real = real_labelled_slices(real_pairs or [])
        self.partners = contrast_partners(self.real) if cross_contrast else []
        self.weights = np.array(weights if self.real else weights[:2], np.float64)
        self.weights /= self.weights.sum()

    def sample(self):
        source = self.rng.choice(len(self.weights), p=self.weights)
        if source < 2:
            bank = self.banks[source]
            margin = self.rater_margin_mm * self.rng.uniform(0.5, 1.5)
            return synthetic_sample(bank[self.rng.integers(len(bank))], self.rng, margin)
        return real_sample(*self.real[self._real_index()], self.rng, self.pathology, self.oblique)

    def _real_index(self):
        """Index of a real labelled slice drawn at random."""
        return self.rng.integers(len(self.real))

    def _real_pair(self):
        """Two versions of a real slice drawn at random: two co-registered contrasts (a cross_contrast share
        of the slices that have one) or two intensity versions of one."""
        n = self._real_index()
        image, mask, spacing = self.real[n]
        partners = self.partners[n] if self.cross_contrast else []
        if partners and self.rng.random() < self.cross_contrast:
            other = self.real[partners[self.rng.integers(len(partners))]][0]
            return real_sample_across(image, other, mask, spacing, self.rng, self.pathology, self.oblique)
        inverted = bool(self.inverted_pairs) and self.rng.random() < self.inverted_pairs  # no draw when off: replays
        return real_sample_pair(image, mask, spacing, self.rng, self.pathology, inverted, self.oblique)

    def batch(self, size):
        """size slices of OUT_PX, or (window_fraction of the batches) cord windows of one of window_sizes.
        Paired: pair_count(paired, size) real slices first, each followed by its other version (items 2n and
        2n + 1), then single samples."""
        if self.paired:
            pairs = pair_count(self.paired, size)
            groups = [self._real_pair() for _ in range(pairs)] + [[self.sample()] for _ in range(size - 2 * pairs)]
        else:
            groups = [[self.sample()] for _ in range(size)]
        if self.rng.random() < self.window_fraction:
            # one size only: no draw, so that runs recorded before the choice existed replay exactly
            side = self.window_sizes[0] if len(self.window_sizes) == 1 else int(self.rng.choice(self.window_sizes))
            groups = [same_draws(self.rng, lambda sample: cord_window(*sample, self.rng, side), group) for group in groups]
        images, targets = zip(*[sample for group in groups for sample in group])
        return np.stack(images)[:, None], np.stack(targets)[:, None]
