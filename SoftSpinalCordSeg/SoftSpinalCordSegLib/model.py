"""The network and the per-slice preprocessing shared by training and inference."""

from __future__ import annotations

import numpy as np

WORKING_SPACING_MM = 1.0  # in-plane grid the network sees
MIN_SLICE_PX = 128  # slices are edge-padded to at least this (the training canvas)
DIVISOR = 16  # four poolings
FEATURES = (16, 32, 64, 128, 256, 16)
NORMALISED_RANGE = (-0.2, 1.5)  # normalize_slice's clip: about [0, 1], with room for what lies beyond the percentiles


def build_network(features=FEATURES):
    """2D UNet from MONAI: one grey channel in, one cord-fraction logit out."""
    from monai.networks.nets import BasicUNet

    return BasicUNet(spatial_dims=2, in_channels=1, out_channels=1, features=tuple(features))


def save_architecture(path, features=FEATURES):
    """The network's code as TorchScript, its parameters emptied (the weights ship apart, in the .pt file):
    loading this takes 0.05 s where importing MONAI takes 1.7 s, a third of a whole `softseg segment`."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated; MONAI is the fallback
        scripted = torch.jit.script(build_network(features).eval())
    with torch.no_grad():
        for parameter in scripted.parameters():
            parameter.data = torch.empty(0)
    scripted.save(str(path))


def load_architecture(path):
    """The TorchScript network of save_architecture (parameters still empty); None where this torch cannot
    load it (too old, or TorchScript gone), so that the caller builds the network from MONAI instead."""
    import warnings

    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.load(str(path), map_location="cpu")
    except (AttributeError, RuntimeError):
        return None


def frozen(network):
    """The TorchScript network with its weights folded in as constants and dropout gone (identical outputs;
    a batch of 16 windows 13 % faster on this CPU, its first call 3x faster); the network itself where it is
    not TorchScript or this torch cannot freeze it."""
    import warnings

    import torch

    if not isinstance(network, torch.jit.ScriptModule):
        return network
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # as for torch.jit.load above
            return torch.jit.freeze(network)
    except (AttributeError, RuntimeError):
        return network


def fill_parameters(network, state):
    """Set every parameter of network to the float32 tensor of state (shapes may differ: the
    architecture file holds empty ones)."""
    import torch

    parameters = dict(network.named_parameters())
    if sorted(parameters) != sorted(state):
        raise ValueError("the weights do not belong to this network (parameter names differ)")
    with torch.no_grad():
        for name, parameter in parameters.items():
            parameter.data = state[name].float()
    return network


def normalize_slice(x):
    """Robust min-max to about [0, 1], per 2D slice: the same at training and at inference."""
    lo, hi = np.percentile(x, [0.5, 99.5])
    return np.clip((x - lo) / max(hi - lo, 1e-6), *NORMALISED_RANGE).astype(np.float32)


def pad_amounts(size, min_px=MIN_SLICE_PX):
    """(before, after) padding that brings one axis to >= min_px and a multiple of DIVISOR."""
    target = max(size, min_px)
    target = -(-target // DIVISOR) * DIVISOR
    before = (target - size) // 2
    return before, target - size - before
