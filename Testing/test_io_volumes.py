"""NIfTI / NRRD volume reading and writing: geometry conventions, scale factors, bad files."""

import nibabel as nib
import nrrd
import numpy as np
import pytest

from ExtremeSegLib.errors import InputError
from ExtremeSegLib.io import read_image, read_labelmap, read_volume, write_volume
from ExtremeSegLib.volume import Volume


def rotation(ax, ay, az):
    """3x3 rotation about x, then y, then z (radians): an oblique direction matrix."""
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def oblique_volume(dtype=np.float32, shape=(7, 6, 5), seed=0):
    """A small volume with an oblique direction, anisotropic spacing and distinct voxel values."""
    rng = np.random.default_rng(seed)
    array = (rng.random(shape) * 100).astype(dtype)
    return Volume.from_spacing(array, spacing=(0.7, 1.3, 3.1), origin=(-12.5, 40.25, 7.0),
                               direction=rotation(0.3, -0.2, 0.5))


@pytest.mark.parametrize("name", ["v.nrrd", "v.nii.gz", "v.nii"])
def test_round_trip_keeps_voxels_and_oblique_anisotropic_geometry(tmp_path, name):
    volume = oblique_volume()
    read = read_volume(write_volume(volume, tmp_path / name))
    np.testing.assert_array_equal(read.array, volume.array)
    assert read.array.dtype == np.float32
    # NIfTI stores the matrix in float32: sub-micrometre differences.
    np.testing.assert_allclose(read.ijk_to_ras, volume.ijk_to_ras, atol=1e-4)


def test_same_voxel_lands_at_same_ras_in_nifti_and_nrrd(tmp_path):
    volume = oblique_volume()
    array = np.zeros(volume.shape, np.int16)
    array[5, 1, 3] = 7  # one marked voxel, off every symmetry axis
    volume = volume.with_array(array)
    from_nrrd = read_volume(write_volume(volume, tmp_path / "a.nrrd"))
    from_nifti = read_volume(write_volume(volume, tmp_path / "a.nii.gz"))
    ras = [v.index_to_ras(np.argwhere(v.array == 7)[0]) for v in (from_nrrd, from_nifti)]
    np.testing.assert_allclose(ras[0], volume.index_to_ras([5, 1, 3]), atol=1e-6)
    np.testing.assert_allclose(ras[1], ras[0], atol=1e-4)


def test_nrrd_is_written_in_lps_with_gzip(tmp_path):
    volume = oblique_volume()
    _, header = nrrd.read(str(write_volume(volume, tmp_path / "a.nrrd")))
    assert header["space"] == "left-posterior-superior"
    assert header["encoding"] == "gzip"
    lps = np.diag([-1.0, -1.0, 1.0])
    np.testing.assert_allclose(header["space origin"], lps @ volume.origin)
    np.testing.assert_allclose(header["space directions"], (lps @ volume.ijk_to_ras[:3, :3]).T)


def test_nifti_is_written_with_matching_sform_and_qform(tmp_path):
    volume = oblique_volume()
    header = nib.load(str(write_volume(volume, tmp_path / "a.nii.gz"))).header
    sform, scode = header.get_sform(coded=True)
    qform, qcode = header.get_qform(coded=True)
    assert scode == 1 and qcode == 1
    np.testing.assert_allclose(sform, volume.ijk_to_ras, atol=1e-4)
    np.testing.assert_allclose(qform, volume.ijk_to_ras, atol=1e-4)


@pytest.mark.parametrize("space, flip", [("right-anterior-superior", [1, 1, 1]), ("RAS", [1, 1, 1]),
                                         ("left-anterior-superior", [-1, 1, 1]), ("LPS", [-1, -1, 1])])
def test_nrrd_space_is_converted_to_ras(tmp_path, space, flip):
    header = {"space": space, "space directions": np.diag([1.0, 2.0, 3.0]), "space origin": np.array([4.0, 5.0, 6.0]),
              "kinds": ["domain"] * 3}
    nrrd.write(str(tmp_path / "s.nrrd"), np.zeros((2, 3, 4), np.uint8), header)
    volume = read_volume(tmp_path / "s.nrrd")
    np.testing.assert_allclose(volume.origin, np.array(flip) * [4.0, 5.0, 6.0])
    np.testing.assert_allclose(volume.ijk_to_ras[:3, :3], np.diag(flip) @ np.diag([1.0, 2.0, 3.0]))


def test_detached_nhdr_is_read(tmp_path):
    volume = oblique_volume(np.int16)
    directions = (np.diag([-1.0, -1.0, 1.0]) @ volume.ijk_to_ras[:3, :3]).T
    header = {"space": "left-posterior-superior", "space directions": directions,
              "space origin": np.diag([-1.0, -1.0, 1.0]) @ volume.origin, "kinds": ["domain"] * 3}
    nrrd.write(str(tmp_path / "d.nhdr"), volume.array, header, detached_header=True)
    read = read_volume(tmp_path / "d.nhdr")
    np.testing.assert_array_equal(read.array, volume.array)
    np.testing.assert_allclose(read.ijk_to_ras, volume.ijk_to_ras, atol=1e-9)


def test_nifti_scale_factors_are_applied(tmp_path):
    raw = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    image = nib.Nifti1Image(raw, np.eye(4))
    image.header.set_slope_inter(0.5, 10.0)
    nib.save(image, str(tmp_path / "scaled.nii.gz"))
    np.testing.assert_allclose(read_volume(tmp_path / "scaled.nii.gz").array, raw * 0.5 + 10.0)
    assert read_image(tmp_path / "scaled.nii.gz").array.dtype == np.float32
    with pytest.raises(InputError, match="non-integer values"):
        read_labelmap(tmp_path / "scaled.nii.gz")


def test_labelmap_from_whole_valued_floats_becomes_integer(tmp_path):
    labels = np.zeros((4, 4, 4), np.float32)
    labels[1:3, 1:3, 1:3] = 3.0
    write_volume(Volume.from_spacing(labels), tmp_path / "l.nii.gz")
    read = read_labelmap(tmp_path / "l.nii.gz")
    assert np.issubdtype(read.array.dtype, np.integer)
    np.testing.assert_array_equal(read.array, labels.astype(int))


def test_image_with_nan_is_refused(tmp_path):
    array = np.ones((3, 3, 3), np.float32)
    array[1, 1, 1] = np.nan
    write_volume(Volume.from_spacing(array), tmp_path / "nan.nrrd")
    with pytest.raises(InputError, match="NaN or infinite"):
        read_image(tmp_path / "nan.nrrd")


def test_trailing_singleton_dimension_is_dropped(tmp_path):
    nib.save(nib.Nifti1Image(np.ones((3, 4, 5, 1), np.float32), np.eye(4)), str(tmp_path / "t.nii.gz"))
    assert read_volume(tmp_path / "t.nii.gz").shape == (3, 4, 5)


def test_storable_types(tmp_path):
    mask = np.zeros((3, 3, 3), bool)
    mask[1, 1, 1] = True
    assert read_volume(write_volume(Volume.from_spacing(mask), tmp_path / "b.nrrd")).array.dtype == np.uint8
    labels = mask.astype(np.int64) * 1000
    assert read_volume(write_volume(Volume.from_spacing(labels), tmp_path / "l.nii.gz")).array.dtype == np.int32


# -- bad input -------------------------------------------------------------------------------------
def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_volume(tmp_path / "nothing.nii.gz")


def test_unsupported_extension(tmp_path):
    (tmp_path / "a.mha").write_bytes(b"x")
    with pytest.raises(InputError, match="unsupported file type"):
        read_volume(tmp_path / "a.mha")
    with pytest.raises(InputError, match="cannot write"):
        write_volume(oblique_volume(), tmp_path / "a.mha")


def test_truncated_gzip_nifti(tmp_path):
    path = write_volume(oblique_volume(shape=(30, 30, 30)), tmp_path / "full.nii.gz")
    data = path.read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="could not be read as NIfTI.*truncated"):
        read_volume(tmp_path / "cut.nii.gz")


def test_not_a_nifti(tmp_path):
    (tmp_path / "text.nii").write_text("hello")
    with pytest.raises(InputError, match="could not be read as NIfTI"):
        read_volume(tmp_path / "text.nii")


def test_nrrd_header_without_data(tmp_path):
    path = write_volume(oblique_volume(), tmp_path / "full.nrrd")
    header = path.read_bytes().split(b"\n\n")[0] + b"\n\n"
    (tmp_path / "header_only.nrrd").write_bytes(header)
    with pytest.raises(InputError, match="could not be read as NRRD"):
        read_volume(tmp_path / "header_only.nrrd")


def test_truncated_gzip_nrrd(tmp_path):
    path = write_volume(oblique_volume(shape=(30, 30, 30)), tmp_path / "full.nrrd")
    data = path.read_bytes()
    (tmp_path / "cut.nrrd").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="could not be read as NRRD"):
        read_volume(tmp_path / "cut.nrrd")


def test_vector_nifti_is_refused(tmp_path):
    nib.save(nib.Nifti1Image(np.ones((3, 4, 5, 3), np.float32), np.eye(4)), str(tmp_path / "rgb.nii.gz"))
    with pytest.raises(InputError, match="3D scalar volume"):
        read_volume(tmp_path / "rgb.nii.gz")


def test_vector_nrrd_is_refused(tmp_path):
    header = {"space": "left-posterior-superior", "kinds": ["vector", "domain", "domain", "domain"],
              "space directions": np.vstack([np.full((1, 3), np.nan), np.eye(3)])}
    nrrd.write(str(tmp_path / "vec.nrrd"), np.ones((3, 4, 5, 6), np.float32), header)
    with pytest.raises(InputError, match="3D scalar volume"):
        read_volume(tmp_path / "vec.nrrd")


def test_2d_image_is_refused(tmp_path):
    nib.save(nib.Nifti1Image(np.ones((3, 4), np.float32), np.eye(4)), str(tmp_path / "flat.nii.gz"))
    with pytest.raises(InputError, match="2D image"):
        read_volume(tmp_path / "flat.nii.gz")


def test_existing_file_is_not_overwritten(tmp_path):
    target = tmp_path / "mine.nrrd"
    target.write_text("the user's file")
    with pytest.raises(InputError, match="already exists"):
        write_volume(oblique_volume(), target)
    assert target.read_text() == "the user's file"
    write_volume(oblique_volume(), target, overwrite=True)
    assert read_volume(target).shape == (7, 6, 5)
    assert [p.name for p in tmp_path.iterdir()] == ["mine.nrrd"]  # no temporary left behind


def test_sheared_grid_is_not_written_as_nifti(tmp_path):
    sheared = np.eye(4)
    sheared[0, 1] = 0.3
    volume = Volume(np.zeros((3, 3, 3), np.float32), sheared)
    with pytest.raises(InputError, match="not perpendicular.*nrrd"):
        write_volume(volume, tmp_path / "s.nii.gz")
    np.testing.assert_allclose(read_volume(write_volume(volume, tmp_path / "s.nrrd")).ijk_to_ras, sheared)


def test_missing_output_folder(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        write_volume(oblique_volume(), tmp_path / "no" / "such" / "v.nrrd")


# -- real data -------------------------------------------------------------------------------------
def test_real_cases_read_with_matching_geometry(shared_data):
    image = read_image(shared_data / "hippocampus" / "images" / "hippocampus_001.nii.gz")
    labels = read_labelmap(shared_data / "hippocampus" / "labels" / "hippocampus_001.nii.gz")
    image.require_same_geometry(labels, "the hippocampus label map")
    assert set(np.unique(labels.array)) <= {0, 1, 2} and labels.array.any()
    acdc = read_image(shared_data / "acdc" / "patient001_frame01_image.nii.gz")  # int16 + scale factor
    assert acdc.array.dtype == np.float32 and 0.99 < acdc.array.max() <= 1.0001
    np.testing.assert_allclose(acdc.spacing, [1.5625, 1.5625, 10.0], atol=1e-4)
