"""The one MONAI transform an exported bundle needs beyond MONAI's own: ExtremeSeg's model grid.

This file is copied into every exported MONAI Bundle as ``scripts/extremeseg_transforms.py`` and must import
nothing but numpy and MONAI, so that the bundle runs where ExtremeSeg is not installed.

ExtremeSeg resamples an image to the model's voxel size by keeping its field of view: the new shape is
``round(shape * spacing / pixdim)`` and the voxel edges of both grids coincide (``F.interpolate`` with
``align_corners=False``). MONAI's ``Spacingd`` keeps ``pixdim`` exactly instead and lets the field of view
change by the rounding, so its voxels sit elsewhere and the labels would differ; MONAI's ``Resized`` does
exactly ExtremeSeg's resampling but wants a fixed size, which depends on each image's spacing. Hence
:class:`ResizeToSpacingd`: ``Resized`` with the size computed per image (and ``Resized``'s inverse, so
``Invertd`` brings the probabilities back onto the image grid).
"""

from __future__ import annotations

import numpy as np
from monai.data.utils import affine_to_spacing
from monai.transforms import Resized


def model_grid_shape(shape, spacing, pixdim) -> tuple:
    """Voxels per axis of a field of view of ``shape`` voxels of ``spacing`` mm resampled to ``pixdim`` mm."""
    ratio = np.asarray(shape, dtype=float) * np.asarray(spacing, dtype=float) / np.asarray(pixdim, dtype=float)
    return tuple(int(n) for n in np.maximum(1, np.round(ratio)))


class ResizeToSpacingd(Resized):
    """Resize channel-first images (MetaTensors with an affine) to voxels of ``pixdim`` mm, field of view kept.

    Args:
        keys: the images to resize.
        pixdim: target voxel size per spatial axis (mm).
        mode: interpolation (``F.interpolate``'s), ``"trilinear"`` for images.
    """

    def __init__(self, keys, pixdim, mode: str = "trilinear", allow_missing_keys: bool = False):
        super().__init__(keys, spatial_size=(1,) * len(pixdim), mode=mode, allow_missing_keys=allow_missing_keys)
        self.pixdim = tuple(float(p) for p in pixdim)

    def __call__(self, data, lazy=None):
        d = dict(data)
        for key, mode, align_corners, dtype in self.key_iterator(d, self.mode, self.align_corners, self.dtype):
            image = d[key]
            spacing = affine_to_spacing(image.affine, r=len(self.pixdim))
            self.resizer.spatial_size = model_grid_shape(image.shape[1:], np.asarray(spacing), self.pixdim)
            d[key] = self.resizer(image, mode=mode, align_corners=align_corners, dtype=dtype, lazy=False)
        return d
