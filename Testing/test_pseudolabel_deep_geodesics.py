"""Deep geodesics: click codes survive the trip, and the network's background term keeps paths in the object."""

import numpy as np
import pytest

from ExtremeSegLib.errors import InputError
from ExtremeSegLib.pseudolabel.deep_geodesics import (
    batch_geodesic_masks,
    click_codes,
    decode_clicks,
    geodesic_paths_mask,
)


def _arch(shape=(40, 30, 9)):
    """A thick arch (half annulus) in the I-J plane, extruded along K: the straight line between its feet crosses
    the hole. Returns (image, mask, clicks (3, 2, 3), tight box)."""
    i, j, k = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    radius = np.hypot(i - 20, j - 4)
    mask = (radius > 9) & (radius < 15) & (j >= 4) & (k >= 2) & (k <= 6)
    image = np.where(mask, 1.0, 0.0).astype(np.float32)
    image += np.random.default_rng(0).normal(0, 0.05, shape).astype(np.float32)
    clicks = np.array([[[6, 5, 4], [34, 5, 4]],  # I: the two feet
                       [[20, 4 + 10, 4], [20, 4 + 14, 4]],  # J: across the top of the arch
                       [[20, 16, 2], [20, 16, 6]]])  # K
    box = np.zeros(shape, bool)
    box[6:35, 4:19, 2:7] = True
    return image, mask, clicks, box


def test_click_codes_round_trip_and_missing_pairs_are_skipped():
    _, _, clicks, _ = _arch()
    codes = click_codes(clicks, (40, 30, 9))
    pairs = decode_clicks(codes)
    assert [p[0] for p in pairs] == [0, 1, 2]
    assert np.array_equal(pairs[0][1], clicks[0, 0]) and np.array_equal(pairs[0][2], clicks[0, 1])
    codes[tuple(clicks[1, 1])] = 0  # the high J click left the patch
    assert [p[0] for p in decode_clicks(codes)] == [0, 2]


def test_deep_geodesics_stay_inside_the_object():
    image, mask, clicks, box = _arch()
    codes = click_codes(clicks, image.shape)
    background = np.where(mask, 0.02, 0.98).astype(np.float32)  # what a trained network would say
    deep = geodesic_paths_mask(image, codes, box, (1, 1, 1), background, cost="deep")
    assert deep.sum() > 30
    assert np.all(mask[deep])
    # where the image shows no edge, only the network term keeps the foot-to-foot path out of the hole
    flat = np.zeros_like(image)
    assert np.all(mask[geodesic_paths_mask(flat, codes, box, (1, 1, 1), background, cost="deep")])
    euclid = geodesic_paths_mask(flat, codes, box, (1, 1, 1), cost="gradient_euclidean")
    assert (euclid & ~mask).sum() > 5


def test_paths_stay_in_the_tight_box_and_join_the_clicks():
    image, mask, clicks, box = _arch()
    paths = batch_geodesic_masks(image[None].repeat(2, 0), click_codes(clicks, image.shape)[None].repeat(2, 0),
                                 box[None].repeat(2, 0), (1.0, 1.0, 2.0), cost="gradient")
    assert paths.shape == (2,) + image.shape
    assert np.all(box[paths[0]])
    assert all(paths[0][tuple(c)] for c in clicks.reshape(-1, 3))


def test_deep_cost_needs_the_network_and_a_known_cost():
    image, _, clicks, box = _arch()
    codes = click_codes(clicks, image.shape)
    with pytest.raises(InputError):
        geodesic_paths_mask(image, codes, box, cost="deep")
    with pytest.raises(InputError):
        geodesic_paths_mask(image, codes, box, cost="straight")
