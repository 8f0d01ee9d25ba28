"""The network and the per-slice preprocessing shared by training and inference."""

from __future__ import annotations

import numpy as np

WORKING_SPACING_MM = 1.0  # in-plane grid the network sees
MIN_SLICE_PX = 128  # slices are edge-padded to at least this (the training canvas)
DIVISOR = 16  # four poolings
FEATURES = (16, 32, 64, 128, 256, 16)


def build_network():
    """2D UNet from MONAI: one grey channel in, one cord-fraction logit out."""
    from monai.networks.nets import BasicUNet

    return BasicUNet(spatial_dims=2, in_channels=1, out_channels=1, features=FEATURES)


def normalize_slice(x):
    """Robust min-max to about [0, 1], per 2D slice: the same at training and at inference."""
    lo, hi = np.percentile(x, [0.5, 99.5])
    return np.clip((x - lo) / max(hi - lo, 1e-6), -0.2, 1.5).astype(np.float32)


def pad_amounts(size, min_px=MIN_SLICE_PX):
    """(before, after) padding that brings one axis to >= min_px and a multiple of DIVISOR."""
    target = max(size, min_px)
    target = -(-target // DIVISOR) * DIVISOR
    before = (target - size) // 2
    return before, target - size - before
