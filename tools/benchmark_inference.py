"""Speed and memory of `softseg segment` against the official contrast-agnostic pipeline, same volume, same run.

    pip install --no-deps dynamic-network-architectures    # only for the official network
    python tools/benchmark_inference.py [--repeats 2] [--shape 64 256 320]

Each pipeline runs in its own fresh process (wall time of the whole process and its peak RSS):
- ours: `python -m SoftSpinalCordSegLib segment IN --output OUT` (load, reorient, 1 mm, 2D UNet over axial
  slices, clean-up, resample back, write);
- official: load, reorient to RPI, resample to 1 mm, crop 64x192 in-plane, nnU-Net PlainConvUNet
  (6 stages, 32..384 features, 38.8 M parameters, random weights), MONAI sliding window 64x192x320,
  overlap 0.5, Gaussian blending, write.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OFFICIAL = r"""
import sys, numpy as np, nibabel as nib, torch
from monai.inferers import sliding_window_inference
from dynamic_network_architectures.architectures.unet import PlainConvUNet
torch.set_num_threads(int(sys.argv[3]))
img = nib.load(sys.argv[1])
rpi = nib.as_closest_canonical(img)  # RAS; RPI is the same data flipped, the cost is identical
data = rpi.get_fdata(dtype=np.float32)
zooms = rpi.header.get_zooms()[:3]
if any(abs(z - 1) > 1e-3 for z in zooms):
    import torch.nn.functional as F
    size = [int(round(n * z)) for n, z in zip(data.shape, zooms)]
    data = F.interpolate(torch.from_numpy(data)[None, None], size=size, mode="trilinear")[0, 0].numpy()
cx, cy = data.shape[0] // 2, data.shape[1] // 2
crop = data[max(cx - 32, 0):cx + 32, max(cy - 96, 0):cy + 96]
crop = (crop - crop.mean()) / crop.std()
net = PlainConvUNet(1, 6, [32, 64, 128, 256, 384, 384], torch.nn.Conv3d, 3, [1, 2, 2, 2, 2, (1, 2, 2)], [2] * 6, 1,
                    [2] * 5, conv_bias=True, norm_op=torch.nn.InstanceNorm3d, norm_op_kwargs={"eps": 1e-5, "affine": True},
                    nonlin=torch.nn.LeakyReLU, nonlin_kwargs={"inplace": True}).eval()
with torch.inference_mode():
    out = sliding_window_inference(torch.from_numpy(np.ascontiguousarray(crop))[None, None], (64, 192, 320), 1, net,
                                   overlap=0.5, mode="gaussian")
prob = torch.relu(out)[0, 0].numpy()
full = np.zeros(data.shape, np.float32)
full[max(cx - 32, 0):cx + 32, max(cy - 96, 0):cy + 96] = prob
nib.save(nib.Nifti1Image(full, rpi.affine), sys.argv[2])
"""


def make_volume(path, shape):
    """A 1 mm MRI-like volume (smooth background, bright canal, grey cord) of the given shape, RAS."""
    import nibabel as nib
    from scipy import ndimage

    rng = np.random.default_rng(0)
    x, y, z = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    cx, cy = shape[0] / 2 + 3 * np.sin(z / 60), shape[1] / 2 + 10 * np.sin(z / 90)
    r = np.hypot((x - cx) / 1.0, (y - cy) / 0.75)
    image = ndimage.gaussian_filter(rng.random(shape).astype(np.float32), 4) * 400 + 200
    image = np.where(r < 7, 900, image)
    image = np.where(r < 4.5, 450, image) + rng.normal(0, 20, shape)
    nib.save(nib.Nifti1Image(image.astype(np.float32), np.diag([1.0, 1.0, 1.0, 1.0])), path)


def timed(cmd, env):
    """Wall seconds and peak RSS (GB) of one child process (os.wait4 gives that child's own usage)."""
    start = time.perf_counter()
    child = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"{cmd[:4]} failed with status {status}")
    return seconds, usage.ru_maxrss / 1024**2  # kB on Linux


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", type=int, nargs=3, default=[64, 256, 320])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--both-polarities", action=argparse.BooleanOptionalAction, default=True,
                   help="--no-both-polarities times `softseg segment --no-both-polarities` (one reading per slice)")
    args = p.parse_args(argv)
    env = dict(os.environ, PYTHONPATH=str(REPO / "SoftSpinalCordSeg"), OMP_NUM_THREADS=str(args.threads))
    with tempfile.TemporaryDirectory() as tmp:
        volume = Path(tmp) / "volume.nii.gz"
        make_volume(volume, tuple(args.shape))
        ours = [sys.executable, "-m", "SoftSpinalCordSegLib", "segment", str(volume), "--output", str(Path(tmp) / "ours.nii.gz"),
                "--quiet"] + ([] if args.both_polarities else ["--no-both-polarities"])
        official = [sys.executable, "-c", OFFICIAL, str(volume), str(Path(tmp) / "official.nii.gz"), str(args.threads)]
        print(f"volume {'x'.join(map(str, args.shape))} at 1 mm, {args.threads} threads, {args.repeats} runs each (wall s, peak RSS GB)")
        pipelines = {"softseg segment": ours, "official pipeline": official}
        runs = {name: [] for name in pipelines}
        for _ in range(args.repeats):  # alternate, so that both see the same moments of a shared machine
            for name, cmd in pipelines.items():
                runs[name].append(timed(cmd, env))
        for name, timings in runs.items():
            print(f"{name:18s} " + "  ".join(f"{s:6.1f} s" for s, _ in timings) + f"   peak RSS {max(r[1] for r in timings):.2f} GB")
        for label, pick in (("best", min), ("median", np.median)):
            ratio = pick([s for s, _ in runs["official pipeline"]]) / pick([s for s, _ in runs["softseg segment"]])
            print(f"speed-up ({label} of runs): {ratio:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
