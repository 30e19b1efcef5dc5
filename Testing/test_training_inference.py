"""Prediction from files: a .seg.nrrd (and probabilities) on the image's own grid, clicks required when trained with
them."""

import numpy as np
import pytest
import torch
from conftest import make_ellipsoid

from ExtremeSegLib.annotations import ExtremePoints
from ExtremeSegLib.errors import InputError
from ExtremeSegLib.io import read_points, read_segmentation, read_volume, write_points, write_volume
from ExtremeSegLib.recipes import predict
from ExtremeSegLib.simulate import simulate_extreme_points
from ExtremeSegLib.training.data import InputSpec
from ExtremeSegLib.training.model_file import save_model
from ExtremeSegLib.training.networks import build_network, plan_network

OBLIQUE = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


@pytest.fixture
def files(tmp_path):
    image, label = make_ellipsoid(shape=(30, 26, 14), radii_mm=(8.0, 7.0, 9.0), spacing=(0.9, 1.1, 2.5),
                                  direction=OBLIQUE)
    write_volume(image, tmp_path / "image.nrrd")
    write_points(tmp_path / "points.mrk.json", simulate_extreme_points(label))
    kernels, strides = plan_network((1.0, 1.0, 2.0), (16, 16, 8), min_feature_size=2, max_levels=3)
    params = dict(in_channels=2, out_channels=2, kernels=kernels, strides=strides, filters=[4, 8, 16])
    inputs = InputSpec(pad_mm=4.0).resolved("mri", (1.0, 1.0, 2.0))
    torch.manual_seed(0)
    save_model(tmp_path / "model.pt", build_network(**params),
               {"recipe": "extreme_points", "network": params, "inputs": inputs.to_dict(), "patch_size": [16, 16, 8],
                "classes": [{"name": "object", "label_values": [1]}]})
    return tmp_path, image


def test_predict_writes_a_segmentation_on_the_image_grid(files):
    folder, image = files
    written = predict(folder / "model.pt", folder / "image.nrrd", folder / "out.seg.nrrd",
                      points=folder / "points.mrk.json", probability=folder / "p.nii.gz", device="cpu")
    geometry, segments = read_segmentation(written["segmentation"])
    assert geometry.same_geometry(image)
    assert [s.name for s in segments] == ["object"]
    probability = read_volume(folder / "p.nii.gz")
    assert probability.same_geometry(image) and probability.array.min() >= 0 and probability.array.max() <= 1
    assert np.array_equal(segments[0].mask, probability.array > 0.5)
    # outside the clicks' box (padded by 4 mm) nothing is segmented: the model only sees the crop
    points = ExtremePoints.from_points(read_points(folder / "points.mrk.json")[0], image)
    lo, hi = points.box_index(image, 4.0)
    outside = np.ones(image.shape, bool)
    outside[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = False
    assert probability.array[outside].max() == 0.0 and probability.array[~outside].min() > 0.0


def test_predict_refuses_what_it_cannot_do_well(files):
    folder, _ = files
    with pytest.raises(InputError, match="extreme points"):
        predict(folder / "model.pt", folder / "image.nrrd", folder / "a.seg.nrrd", device="cpu")
    (folder / "b.seg.nrrd").write_text("the user's file")
    with pytest.raises(InputError, match="already exists"):
        predict(folder / "model.pt", folder / "image.nrrd", folder / "b.seg.nrrd", points=folder / "points.mrk.json",
                device="cpu")
    assert (folder / "b.seg.nrrd").read_text() == "the user's file"


def test_predict_cleans_the_label_map_as_the_model_file_says(files):
    from scipy import ndimage as ndi

    from ExtremeSegLib.training.model_file import load_model, read_description

    folder, image = files
    description = read_description(folder / "model.pt")
    assert load_model(folder / "model.pt").postprocess.largest_component is False  # written before: no cleaning
    description["postprocess"] = {"clip_to_points": True, "box_margin_mm": 0.0, "largest_component": True,
                                  "convex": False}
    model = load_model(folder / "model.pt")
    save_model(folder / "clean.pt", model.network, description)
    predict(folder / "clean.pt", folder / "image.nrrd", folder / "out.seg.nrrd", points=folder / "points.mrk.json",
            probability=folder / "p.nii.gz", device="cpu")
    mask = read_segmentation(folder / "out.seg.nrrd")[1][0].mask
    raw = read_volume(folder / "p.nii.gz").array > 0.5  # probabilities are the network's own
    assert mask.any() and np.all(raw >= mask)
    assert ndi.label(mask, structure=np.ones((3, 3, 3)))[1] == 1
    points = ExtremePoints.from_points(read_points(folder / "points.mrk.json")[0], image)
    lo, hi = points.box_index(image, 0.0)
    inside = np.zeros(image.shape, bool)
    inside[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = True
    assert not np.any(mask & ~inside) and np.any(raw & ~inside)


def test_predict_without_postprocess_writes_the_networks_own_label_map(files):
    from ExtremeSegLib.cli import main
    from ExtremeSegLib.training.model_file import load_model, read_description

    folder, _ = files
    description = read_description(folder / "model.pt")
    description["postprocess"] = {"clip_to_points": True, "box_margin_mm": 0.0, "largest_component": True,
                                  "convex": False}
    save_model(folder / "clean.pt", load_model(folder / "model.pt").network, description)
    common = ["predict", "--model", str(folder / "clean.pt"), "--image", str(folder / "image.nrrd"),
              "--points", str(folder / "points.mrk.json"), "--device", "cpu"]
    assert main(common + ["--out", str(folder / "raw.seg.nrrd"), "--no-postprocess",
                          "--probability", str(folder / "p.nii.gz")]) == 0
    assert main(common + ["--out", str(folder / "clean.seg.nrrd")]) == 0
    raw = read_segmentation(folder / "raw.seg.nrrd")[1][0].mask
    clean = read_segmentation(folder / "clean.seg.nrrd")[1][0].mask
    probability = read_volume(folder / "p.nii.gz").array
    confident = np.abs(probability - 0.5) > 1e-4  # argmax of (background, object) = object above one half
    assert np.array_equal(raw[confident], probability[confident] > 0.5)
    assert np.all(raw >= clean) and np.any(raw & ~clean)  # the untrained network's scatter is what cleaning removes


def test_a_model_naming_its_convex_classes_is_applied_by_name(files):
    from ExtremeSegLib.training.model_file import load_model, read_description
    from ExtremeSegLib.training.postprocess import PostprocessConfig, postprocess_labels

    folder, image = files
    description = read_description(folder / "model.pt")
    network = load_model(folder / "model.pt").network
    predict(folder / "model.pt", folder / "image.nrrd", folder / "raw.seg.nrrd", points=folder / "points.mrk.json",
            device="cpu", postprocess=False)
    raw = read_segmentation(folder / "raw.seg.nrrd")[1][0].mask.astype(np.uint8)
    settings = {"clip_to_points": False, "box_margin_mm": 0.0, "largest_component": True, "convex": ["object"]}
    save_model(folder / "named.pt", network, {**description, "postprocess": settings})
    predict(folder / "named.pt", folder / "image.nrrd", folder / "named.seg.nrrd", points=folder / "points.mrk.json",
            device="cpu")
    mask = read_segmentation(folder / "named.seg.nrrd")[1][0].mask
    expected = postprocess_labels(raw, image.spacing, PostprocessConfig(**settings), class_names=["object"]) == 1
    # a named hull needs the model's class names: without them the prediction would raise InputError
    assert np.array_equal(mask, expected)
    save_model(folder / "other.pt", network, {**description, "postprocess": {**settings, "convex": ["other"]}})
    with pytest.raises(InputError, match="cannot be used.*'other', which is not a class"):
        predict(folder / "other.pt", folder / "image.nrrd", folder / "other.seg.nrrd", device="cpu")
