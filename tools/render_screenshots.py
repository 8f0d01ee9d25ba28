"""Render the README / ExtensionsIndex screenshots headless from an MRML scene (no OpenGL, no Slicer GUI).

The image is loaded as Slicer loads it (slicer-core), segmented with `segment_volume_node`, and the slice
views are composited by MRML slice logics exactly as Slicer's slice views blend their layers (background
image + Inferno probability overlay). The CSA plot is the library's plot of the same table.

    python tools/render_screenshots.py                       # the shipped model on sub-unf01 T2w
    python tools/render_screenshots.py --mask MASK.nii.gz    # no model yet: show a given soft/binary mask

Writes Resources/Screenshots/overlay.png and csa_plot.png; prints the figures it measured.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "SoftSpinalCordSeg"))
from SoftSpinalCordSegLib import mrml  # noqa: E402
DEFAULT_IMAGE = ROOT.parent / "shared" / "data" / "real" / "unf01" / "sub-unf01_T2w.nii.gz"
VIEWS = ("Red", "Yellow", "Green")  # three axial views: inferior, middle and superior cord slices


def render_views(app, outputs, size=384, field_of_view_mm=40.0):
    """RGB images of axial views centred on the cord at three levels, as Slicer's slice views blend them."""
    rows = outputs.csa.rows
    chosen = [rows[len(rows) // 6], rows[len(rows) // 2], rows[-1 - len(rows) // 6]]
    images = []
    for name, row in zip(VIEWS, chosen):
        logic = app.add_slice_view(name, "Axial", size=(size, size))
        composite = logic.GetSliceCompositeNode()
        composite.SetBackgroundVolumeID(outputs.probability_volume.GetNodeReference(mrml.SOURCE_REFERENCE_ROLE).GetID())
        composite.SetForegroundVolumeID(outputs.probability_volume.GetID())
        composite.SetForegroundOpacity(0.6)
        slice_node = logic.GetSliceNode()
        slice_node.SetFieldOfView(field_of_view_mm, field_of_view_mm, slice_node.GetFieldOfView()[2])
        slice_node.JumpSliceByCentering(row["x_mm"], row["y_mm"], row["z_mm"])
        images.append((f"axial, z = {row['z_mm']:.0f} mm, CSA {row['csa_mm2']:.0f} mm\u00b2", app.render_slice(name)[..., :3]))
    return images


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", default=str(DEFAULT_IMAGE), help="image to segment (default: sub-unf01 T2w)")
    parser.add_argument("--mask", help="show this mask instead of running the model (before a model exists)")
    parser.add_argument("--output-dir", default=str(ROOT / "Resources" / "Screenshots"))
    args = parser.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import slicer

    from SoftSpinalCordSegLib.plot import plot_csa

    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as cache, mrml.HeadlessSlicer(cache) as app:
        volume = app.load_volume(args.image, Path(args.image).name.split(".")[0])
        probability = None
        if args.mask:
            mask_node = app.load_volume(args.mask, "mask")
            probability = np.clip(slicer.util.arrayFromVolume(mask_node).transpose(2, 1, 0).astype(np.float32), 0, 1)
        start = time.perf_counter()
        outputs = mrml.segment_volume_node(volume, probability=probability, device="cpu")
        seconds = time.perf_counter() - start
        source = f"mask {Path(args.mask).name}" if args.mask else "the shipped model"
        images = render_views(app, outputs)

        figure, axes = plt.subplots(1, len(images), figsize=(4 * len(images), 4.3), dpi=100)
        for axis, (title, image) in zip(axes, images):
            axis.imshow(image)
            axis.set_title(title)
            axis.axis("off")
        figure.suptitle(f"{volume.GetName()}: soft cord probability ({source}), Inferno overlay")
        figure.tight_layout()
        figure.savefig(output_dir / "overlay.png")
        plt.close(figure)
        plot_csa(outputs.csa, output_dir / "csa_plot.png", title=f"CSA along the cord: {volume.GetName()} ({source})")

        csa = outputs.csa.column("csa_mm2")
        print(f"{volume.GetName()}: {len(csa)} slices, median CSA {np.nanmedian(csa):.1f} mm2 "
              f"(range {np.nanmin(csa):.1f}-{np.nanmax(csa):.1f}); segment_volume_node {seconds:.1f} s with {source}")
        print(f"wrote {output_dir / 'overlay.png'} and {output_dir / 'csa_plot.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
