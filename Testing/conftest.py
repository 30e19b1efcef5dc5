"""Shared test fixtures: the real data folder (skipped cleanly when absent), small synthetic volumes and the real
MRML scene (``mrml_scene``, from slicer_scene.py)."""

from pathlib import Path

import numpy as np
import pytest
from slicer_scene import mrml_scene  # noqa: F401  (the fixture, offered to every test module)

from ExtremeSegLib.volume import Volume

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SAMPLE_DATA = REPO / "Resources" / "SampleData"


@pytest.fixture(autouse=True)
def one_thread():
    """Test tensors are tiny: threads gain nothing there, and idle OpenMP threads spin on a shared CPU."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def shared_data() -> Path:
    """../shared/data (MSD hippocampus, ACDC); the test is skipped when it is not there."""
    if not (SHARED_DATA / "hippocampus").is_dir() or not (SHARED_DATA / "acdc").is_dir():
        pytest.skip(f"real evaluation data not found at {SHARED_DATA} (see the README's Data section)")
    return SHARED_DATA


def make_ellipsoid(shape=(40, 36, 30), radii_mm=(12.0, 9.0, 8.0), spacing=(1.0, 1.2, 1.5),
                   direction=None, noise=0.05, seed=0):
    """A bright ellipsoid on a dark background: (image Volume, label Volume) with the same geometry."""
    rng = np.random.default_rng(seed)
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).astype(float)
    centre = (np.asarray(shape) - 1) / 2.0
    mm = (idx - centre) * np.asarray(spacing)
    inside = np.sum((mm / np.asarray(radii_mm)) ** 2, axis=-1) <= 1.0
    image = inside.astype(np.float32) + noise * rng.standard_normal(shape).astype(np.float32)
    img = Volume.from_spacing(image, spacing, origin=(-20.0, 15.0, 3.0), direction=direction)
    lab = img.with_array(inside.astype(np.uint8))
    return img, lab


@pytest.fixture
def ellipsoid():
    return make_ellipsoid()
