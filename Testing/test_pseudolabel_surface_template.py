"""Surface points -> deformed template: the sphere, the rasteriser, fits on synthetic shapes, warm updates,
bad inputs, and the ``extremeseg template`` command end to end."""

import numpy as np
import pytest
from conftest import make_ellipsoid
from scipy.spatial import ConvexHull

from ExtremeSegLib.cli import main
from ExtremeSegLib.errors import InputError
from ExtremeSegLib.io.markups import write_points
from ExtremeSegLib.io.segmentations import read_segmentation
from ExtremeSegLib.io.volumes import write_volume
from ExtremeSegLib.metrics import dice
from ExtremeSegLib.pseudolabel import SurfaceTemplate, fit_surface_template, surface_points_pseudolabel
from ExtremeSegLib.pseudolabel.surface_template import icosphere, rasterize_mesh, signed_volume
from ExtremeSegLib.simulate import simulate_surface_points
from ExtremeSegLib.volume import Volume

ROTATION = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])


def bent_tube(shape=(56, 44, 28), spacing=(1.0, 1.0, 1.5), bend_mm=13.0, tube_mm=6.0):
    """A C-shaped tube (half a torus, closed ends): genus 0 and far from convex, like a hippocampus."""
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).astype(float)
    mm = (idx - (np.asarray(shape) - 1) / 2.0) * np.asarray(spacing)
    angle = np.clip(np.arctan2(mm[..., 1], mm[..., 0]), -np.pi / 2, np.pi / 2)
    centre = np.stack([bend_mm * np.cos(angle), bend_mm * np.sin(angle), np.zeros_like(angle)], axis=-1)
    inside = np.linalg.norm(mm - centre, axis=-1) <= tube_mm
    image = Volume.from_spacing(inside.astype(np.float32), spacing, origin=(5.0, -3.0, 2.0), direction=ROTATION)
    return image, image.with_array(inside.astype(np.uint8))


def hull_mask(points, image):
    hull = ConvexHull(points)
    return rasterize_mesh(points, hull.simplices, image)  # parity: the triangles' orientation does not matter


def test_icosphere_is_a_closed_outward_sphere():
    vertices, faces = icosphere(3)
    assert len(vertices) == 642 and len(faces) == 1280
    edges = {tuple(sorted(e)) for f in faces for e in ((f[0], f[1]), (f[1], f[2]), (f[2], f[0]))}
    assert len(vertices) - len(edges) + len(faces) == 2  # genus 0
    np.testing.assert_allclose(np.linalg.norm(vertices, axis=1), 1.0)
    assert 0.97 * 4 / 3 * np.pi < signed_volume(vertices, faces) < 4 / 3 * np.pi


def test_rasteriser_honours_spacing_direction_and_origin():
    image, label = make_ellipsoid(shape=(40, 36, 30), radii_mm=(12.0, 9.0, 8.0), direction=ROTATION)
    unit, faces = icosphere(4)
    centre = image.index_to_ras((np.asarray(image.shape) - 1) / 2.0)
    radii_ras = np.abs(image.direction) @ np.array([12.0, 9.0, 8.0])  # the ellipsoid's axes seen in RAS
    mask = rasterize_mesh(centre + unit * radii_ras, faces, image)
    assert dice(mask, label.array) > 0.97
    assert not rasterize_mesh(centre + unit * radii_ras + 500.0, faces, image).any()  # far outside: empty


def test_template_beats_the_convex_hull_on_a_bent_object():
    image, label = bent_tube()
    points = simulate_surface_points(label, 50, seed=3)
    mesh = fit_surface_template(image, points)
    template, hull = dice(mesh.mask(image), label.array), dice(hull_mask(points, image), label.array)
    assert template > 0.8 and template > hull + 0.08, (template, hull)
    assert mesh.fit_error_mm < 0.5  # the surface passes close to every point
    assert signed_volume(mesh.vertices, mesh.faces) > 0  # triangles face outwards


def test_more_points_give_a_closer_template():
    image, label = bent_tube()
    scores = [dice(fit_surface_template(image, simulate_surface_points(label, n, seed=3)).mask(image), label.array)
              for n in (12, 100)]
    assert scores[1] > scores[0] + 0.1, scores


def test_warm_update_lands_where_a_cold_fit_does():
    image, label = make_ellipsoid(shape=(44, 40, 30), radii_mm=(15.0, 9.0, 7.0), direction=ROTATION)
    points = simulate_surface_points(label, 45, seed=2)
    live = SurfaceTemplate(image)
    live.update(points[:30])
    moved = points.copy()
    moved[5] += 0.8  # a point dragged a little
    for current in (points[:38], points, moved):  # points added, then one moved
        warm = live.update(current)
        cold = SurfaceTemplate(image).update(current)
        assert dice(warm.mask(image), cold.mask(image)) > 0.98
        assert warm.iterations <= cold.iterations
    assert np.array_equal(live.mask(), warm.mask(image))


def test_pseudolabel_is_the_hard_template():
    image, label = make_ellipsoid()
    points = simulate_surface_points(label, 30, seed=0)
    result = surface_points_pseudolabel(image, points)
    assert np.array_equal(result.hard() == 1, fit_surface_template(image, points).mask(image))
    assert np.all(result.weight == 1.0) and result.geometry is image


def test_duplicates_are_merged():
    image, label = make_ellipsoid()
    points = simulate_surface_points(label, 20, seed=1)
    doubled = np.vstack([points, points[[3, 7]] + 0.05])  # two clicks placed twice
    a, b = fit_surface_template(image, points), fit_surface_template(image, doubled)
    assert dice(a.mask(image), b.mask(image)) > 0.99


@pytest.mark.parametrize("make, message", [
    (lambda p: p[:3], "at least 4 distinct points"),
    (lambda p: np.vstack([p[:3], p[:3] + 0.01]), "3 duplicates merged"),
    (lambda p: np.c_[p[:, :2], np.full(len(p), p[0, 2])], "one plane"),
    (lambda p: np.outer(np.linspace(0, 5, len(p)), [3.0, 2.0, 1.0]) + p[0], "one line"),
    (lambda p: np.vstack([p, [500.0, 0.0, 0.0]]), "outside the image"),
    (lambda p: np.vstack([p, [np.nan, 0.0, 0.0]]), "NaN"),
])
def test_bad_points_are_refused_and_the_last_fit_kept(make, message):
    image, label = make_ellipsoid()
    points = simulate_surface_points(label, 20, seed=1)
    live = SurfaceTemplate(image)
    good = live.update(points)
    with pytest.raises(InputError, match=message):
        live.update(make(points))
    assert live.mesh is good


def test_bad_settings_are_refused():
    image, _ = make_ellipsoid()
    for kwargs in ({"smoothness": 0.0}, {"subdivisions": 7}, {"max_iterations": 0}, {"tolerance_mm": -1.0}):
        with pytest.raises(InputError):
            SurfaceTemplate(image, **kwargs)


def test_command_writes_the_segmentation_and_the_mesh(tmp_path, capsys):
    image, label = make_ellipsoid(direction=ROTATION)
    write_volume(image, tmp_path / "img.nrrd")
    write_points(tmp_path / "p.mrk.json", simulate_surface_points(label, 40, seed=4), name="SurfacePoints")
    args = ["template", "--image", str(tmp_path / "img.nrrd"), "--points", str(tmp_path / "p.mrk.json"),
            "--out", str(tmp_path / "t.seg.nrrd"), "--mesh", str(tmp_path / "t.vtk")]
    assert main(args) == 0
    geometry, segments = read_segmentation(tmp_path / "t.seg.nrrd")
    assert geometry.same_geometry(image) and dice(segments[0].mask, label.array) > 0.85
    vtk = pytest.importorskip("vtk")
    reader = vtk.vtkPolyDataReader()
    reader.SetFileName(str(tmp_path / "t.vtk"))
    reader.Update()
    mesh = reader.GetOutput()
    assert mesh.GetNumberOfPoints() == 642 and mesh.GetNumberOfCells() == 1280
    lps = np.array([mesh.GetPoint(n) for n in range(mesh.GetNumberOfPoints())])
    ras_centre = image.index_to_ras((np.asarray(image.shape) - 1) / 2.0)
    np.testing.assert_allclose(lps.mean(axis=0) * [-1, -1, 1], ras_centre, atol=1.0)  # stored in LPS
    assert main(args) == 2 and "already exists" in capsys.readouterr().err  # nothing overwritten


def test_command_refuses_bad_points_without_writing(tmp_path, capsys):
    image, label = make_ellipsoid()
    write_volume(image, tmp_path / "img.nrrd")
    flat = simulate_surface_points(label, 20, seed=1)
    flat[:, 2] = flat[0, 2]
    write_points(tmp_path / "flat.mrk.json", flat)
    out = tmp_path / "t.seg.nrrd"
    assert main(["template", "--image", str(tmp_path / "img.nrrd"), "--points", str(tmp_path / "flat.mrk.json"),
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "flat.mrk.json" in err and "one plane" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
