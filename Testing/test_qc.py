"""The QC mosaic's tiles."""

import numpy as np

from SoftSpinalCordSegLib.qc import _window


def test_a_tile_that_leaves_the_slice_keeps_its_size_and_shows_the_outside_as_fill():
    plane = np.arange(20 * 30, dtype=np.float32).reshape(20, 30)
    tile = _window(plane, centre=(2, 28), half=(5, 4), fill=np.nan)  # near a corner: cut off on two sides
    assert tile.shape == (11, 9)  # as a tile in the middle of the slice
    np.testing.assert_array_equal(tile[3:, :6], plane[:8, 24:])  # the slice's part, in place
    assert np.isnan(tile[:3]).all() and np.isnan(tile[:, 6:]).all()
    np.testing.assert_array_equal(_window(plane, (10, 15), (5, 4), 0.0), plane[5:16, 11:20])
