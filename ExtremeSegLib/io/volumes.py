"""Read and write 3D volumes: NIfTI (``.nii``, ``.nii.gz``) and NRRD (``.nrrd``, ``.nhdr``).

Every reader returns a :class:`~ExtremeSegLib.volume.Volume` (``array[i, j, k]`` + IJK-to-RAS);
this module is where file conventions are converted, once:

- NIfTI stores RAS world coordinates (nibabel's ``affine``); the data scale factors
  (``scl_slope``/``scl_inter``) are applied.
- NRRD stores its own ``space`` (Slicer writes ``left-posterior-superior``); directions and origin are
  converted to RAS. Files without a ``space`` are read as LPS, as ITK (and so Slicer) does.

Writers choose the format from the extension: NRRD in LPS space with gzip encoding, as Slicer writes it;
NIfTI with sform = qform = the IJK-to-RAS matrix (code 1, "scanner"), so readers that prefer either agree.
Writers refuse to replace an existing file unless ``overwrite=True``, and write through a temporary file
so that an interrupted write never leaves half a file under the requested name.
"""

from __future__ import annotations

import os
import secrets
import warnings
from pathlib import Path

import numpy as np

from ..errors import InputError, InputWarning
from ..machine import available_memory_bytes, gib
from ..volume import LPS_TO_RAS, Volume
from .outputs import check_not_input, failed_write, note_input, note_written

NIFTI_SUFFIXES = (".nii.gz", ".nii")
NRRD_SUFFIXES = (".nrrd", ".nhdr")
WRITABLE_SUFFIXES = (".nrrd", ".nii.gz", ".nii")

#: NRRD ``space`` name -> sign flips that turn its axes into R, A, S.
_NRRD_SPACE_TO_RAS_SIGNS = {
    "right-anterior-superior": (1.0, 1.0, 1.0),
    "ras": (1.0, 1.0, 1.0),
    "left-anterior-superior": (-1.0, 1.0, 1.0),
    "las": (-1.0, 1.0, 1.0),
    "left-posterior-superior": (-1.0, -1.0, 1.0),
    "lps": (-1.0, -1.0, 1.0),
}

#: NRRD axis kinds that are spatial (any other kind, e.g. "vector" or "list", is not).
_SPATIAL_KINDS = {"domain", "space"}


# -- paths -------------------------------------------------------------------------------------
def file_format(path) -> str:
    """``"nifti"`` or ``"nrrd"`` from the file name; :class:`InputError` for anything else."""
    name = Path(path).name.lower()
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(NRRD_SUFFIXES):
        return "nrrd"
    raise InputError(f"{path}: unsupported file type; use one of {', '.join(NIFTI_SUFFIXES + NRRD_SUFFIXES)}")


def require_readable_file(path) -> Path:
    """The path as a :class:`Path`; :class:`InputError` if it does not exist or is not a file.

    The file is noted as an input of the running command (:mod:`.outputs`: no writer may replace it).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} does not exist; check the path")
    if not path.is_file():
        raise InputError(f"{path} is not a file")
    note_input(path)
    return path


def write_atomically(path, overwrite: bool, write) -> Path:
    """Call ``write(temporary_path)`` then move the result to ``path``.

    The temporary file sits next to ``path`` and keeps its suffix (writers pick the format from it).
    :class:`InputError` if ``path`` exists and ``overwrite`` is false, is one of the running command's inputs,
    its folder does not exist, or the disk refuses the write (full, read-only, no permission: the message names
    the path and why); nothing is left under ``path`` or the temporary name then. The file written is noted as
    an output of the running command (:mod:`.outputs`), removed again if the command fails.
    """
    path = Path(path)
    check_not_input(path)
    if path.is_dir():
        raise InputError(f"cannot write {path}: it is a folder; give a file name")
    if path.exists() and not overwrite:
        raise InputError(f"{path} already exists; choose another output name or allow overwriting it")
    if not path.parent.is_dir():
        raise InputError(f"cannot write {path}: folder {path.parent} does not exist")
    suffix = "".join(path.suffixes[-2:]) if path.name.lower().endswith((".nii.gz", ".seg.nrrd")) else path.suffix
    # A hidden name in the same folder (so the final rename is atomic), created by the writer itself so
    # that it gets the user's usual file permissions.
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp{suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:
        problem = failed_write(err, path)
        if problem is None:
            raise
        raise problem from err
    finally:
        if tmp.exists():
            tmp.unlink()
    note_written(path)
    return path


def write_stream_atomically(path, overwrite: bool, write) -> Path:
    """:func:`write_atomically` for a writer that takes an open binary file, ``write(stream)`` (``torch.save``).

    The file is closed whether or not the write fails: a writer given a path may keep its file open inside the
    exception it raises, and a failed write on a full disk then holds the removed temporary's space for as long
    as the error is kept (in Slicer's Python console, until the next error).
    """
    def to_file(tmp: Path) -> None:
        with open(tmp, "wb") as stream:
            write(stream)
    return write_atomically(path, overwrite, to_file)


def _nrrd_dtype(type_name: str) -> np.dtype:
    """The voxel type an NRRD ``type`` field names (only its size matters here)."""
    name = str(type_name).lower()
    for words, dtype in ((("double", "64", "longlong", "long long"), np.float64), (("char", "int8"), np.uint8),
                         (("short", "16"), np.int16)):
        if any(w in name for w in words):
            return np.dtype(dtype)
    return np.dtype(np.float32)


def require_fits_in_memory(path, shape, dtype) -> None:
    """:class:`InputError` when the voxels a file declares (``shape``, ``dtype``), plus their float32 copy, need
    more main memory than is available: said with the sizes, before reading, instead of a failed allocation."""
    voxels = float(np.prod([float(n) for n in shape])) if len(shape) else 0.0
    needed = voxels * (np.dtype(dtype).itemsize + 4)
    available = available_memory_bytes()
    if available is not None and needed > available:
        raise InputError(f"{path} is too large: its header declares {list(shape)} voxels of {np.dtype(dtype)} "
                         f"({gib(voxels * np.dtype(dtype).itemsize)}; reading it needs about {gib(needed)}), more "
                         f"than the {gib(available)} of memory available here; crop or downsample it first")


def write_text_atomically(path, text: str, overwrite: bool) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through :func:`write_atomically`; returns the path."""
    return write_atomically(path, overwrite, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


# -- NRRD geometry (shared with segmentations.py) ----------------------------------------------
def read_nrrd(path) -> tuple[np.ndarray, dict]:
    """``(data, header)`` of an NRRD file, data in file axis order (fastest axis first).

    :class:`InputError` when the file is missing, truncated or not an NRRD file.
    """
    import nrrd

    path = require_readable_file(path)
    try:
        header = nrrd.read_header(str(path))
    except Exception:  # an unreadable header is reported by the full read below
        header = None
    if header is not None and "sizes" in header:
        require_fits_in_memory(path, [int(n) for n in header["sizes"]], _nrrd_dtype(header.get("type", "")))
    try:
        data, header = nrrd.read(str(path), index_order="F")
    except Exception as err:  # pynrrd raises NRRDError, ValueError, EOFError, zlib.error... for bad files
        raise InputError(
            f"{path} could not be read as NRRD ({type(err).__name__}: {err}); "
            "the file may be truncated, its data file missing, or it is not an NRRD file"
        ) from err
    return data, header


def nrrd_spatial_axes(header: dict, ndim: int) -> list[int]:
    """Indices of the spatial axes of an NRRD array (those with a space direction or a spatial kind)."""
    directions = header.get("space directions")
    if directions is not None:
        rows = [np.asarray(d, dtype=float) if d is not None else None for d in directions]
        return [n for n, d in enumerate(rows) if d is not None and np.all(np.isfinite(d))]
    kinds = header.get("kinds")
    if kinds is not None:
        return [n for n, kind in enumerate(kinds) if str(kind).lower() in _SPATIAL_KINDS]
    return list(range(ndim))


def nrrd_ijk_to_ras(header: dict, spatial_axes, path="the file") -> np.ndarray:
    """4x4 IJK-to-RAS matrix of the given spatial axes of an NRRD header."""
    space = str(header.get("space", "left-posterior-superior")).lower().removesuffix("-time")
    signs = np.asarray(_NRRD_SPACE_TO_RAS_SIGNS.get(space, (-1.0, -1.0, 1.0)))  # unknown spaces: LPS, as ITK
    m = np.eye(4)
    directions = header.get("space directions")
    if directions is not None:
        for col, axis in enumerate(spatial_axes):
            m[:3, col] = np.asarray(directions[axis], dtype=float)[:3]
    elif "spacings" in header:
        spacings = np.asarray(header["spacings"], dtype=float)
        m[:3, :3] = np.diag([spacings[a] if np.isfinite(spacings[a]) else 1.0 for a in spatial_axes])
    origin = header.get("space origin")
    if origin is not None:
        m[:3, 3] = np.asarray(origin, dtype=float)[:3]
    m[:3, :] *= signs[:, None]
    if not np.all(np.isfinite(m)):
        raise InputError(f"{path}: the NRRD space directions or origin are not finite numbers")
    return m


# -- reading -------------------------------------------------------------------------------------
def _squeeze_to_3d(array: np.ndarray, path, spatial_axes=None) -> np.ndarray:
    """Drop length-1 non-spatial axes; :class:`InputError` unless a 3D scalar volume remains."""
    spatial_axes = list(range(min(array.ndim, 3))) if spatial_axes is None else list(spatial_axes)
    extra = [a for a in range(array.ndim) if a not in spatial_axes]
    if len(spatial_axes) == 3 and all(array.shape[a] == 1 for a in extra):
        return array.reshape([array.shape[a] for a in spatial_axes]) if extra else array
    if len(spatial_axes) == 3:
        raise InputError(
            f"{path} holds a {array.ndim}D volume of shape {list(array.shape)} (several values per voxel: "
            "a vector, multi-channel or time series image); ExtremeSeg needs a 3D scalar volume: "
            "extract one component or time point first"
        )
    raise InputError(
        f"{path} holds a {len(spatial_axes)}D image of shape {list(array.shape)}; ExtremeSeg needs a 3D volume"
    )


def _read_nifti(path) -> Volume:
    import nibabel as nib

    try:
        image = nib.load(str(path))
        require_fits_in_memory(path, image.shape, image.get_data_dtype())
        array = np.asanyarray(image.dataobj)  # applies scl_slope / scl_inter when they are set
        affine = np.asarray(image.affine, dtype=float)
    except InputError:
        raise
    except Exception as err:  # nibabel raises ImageFileError, EOFError, OSError, zlib.error... for bad files
        raise InputError(
            f"{path} could not be read as NIfTI ({type(err).__name__}: {err}); "
            "the file may be truncated or not a NIfTI file"
        ) from err
    # NIfTI dims 4+ are time/components; length-1 ones are padding some writers add.
    array = _squeeze_to_3d(array, path)
    return Volume(np.ascontiguousarray(array), affine)


def volume_from_nrrd(data: np.ndarray, header: dict, path="the file") -> Volume:
    """The 3D scalar :class:`Volume` of NRRD data and header from :func:`read_nrrd`."""
    axes = nrrd_spatial_axes(header, data.ndim)
    array = _squeeze_to_3d(data, path, axes)
    return Volume(array, nrrd_ijk_to_ras(header, axes, path))


def read_volume(path) -> Volume:
    """A 3D scalar volume from NIfTI (``.nii``, ``.nii.gz``) or NRRD (``.nrrd``, ``.nhdr``).

    The array keeps the file's voxel type (scaled NIfTI data become floating point).
    :class:`InputError` for a missing, truncated or unsupported file, or one that is not 3D scalar.
    """
    fmt = file_format(path)
    path = require_readable_file(path)
    return _read_nifti(path) if fmt == "nifti" else volume_from_nrrd(*read_nrrd(path), path)


def read_image(path) -> Volume:
    """An intensity image as float32; :class:`InputError` if it holds NaN or infinite voxels.

    An :class:`~ExtremeSegLib.errors.InputWarning` says when it looks like no intensity image
    (:func:`image_problem`): the command line prints it, Python's ``warnings`` filters decide elsewhere.
    """
    volume = read_volume(path)
    volume = volume.with_array(volume.array.astype(np.float32, copy=False))
    volume.require_finite(f"image {path}")
    problem = image_problem(volume.array)
    if problem:
        warnings.warn(f"image {path} {problem}", InputWarning, stacklevel=2)
    return volume


#: an image with at most this many distinct whole values >= 0 (0 among them) looks like a label map
LABEL_MAP_MAX_VALUES = 10


def image_problem(array: np.ndarray) -> str | None:
    """Why ``array`` looks like no intensity image (a phrase), or ``None``: it has no contrast (one value
    everywhere: there is nothing to segment, every method returns its prior shape), or it looks like a label map
    (a handful of whole values from 0: was a segmentation given as the image?)."""
    if array.size == 0:
        return None
    low, high = float(array.min()), float(array.max())
    if low == high:
        return f"has no contrast (every voxel is {low:g}): there is nothing to segment; is it the right file?"
    if low != 0 or high > 255:
        return None
    sample = array.ravel()[:: max(1, array.size // 100_000)]  # many values in a sample: an image, no full count
    if len(np.unique(sample)) > LABEL_MAP_MAX_VALUES:
        return None
    values = np.unique(array)
    if len(values) <= LABEL_MAP_MAX_VALUES and np.all(values == np.round(values)):
        return (f"looks like a label map (only the values {[int(v) for v in values]}), not an intensity image; "
                "give the image the labels were drawn on")
    return None


def as_label_array(array: np.ndarray, what: str) -> np.ndarray:
    """An integer label array; float arrays are accepted only when every value is a whole number.

    Floating-point input is converted to the smallest of uint8 / int16 / int32 / int64 that holds its values.
    """
    array = np.asarray(array)
    if array.dtype == bool:
        return array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        return array
    if not np.issubdtype(array.dtype, np.floating):
        raise InputError(f"{what} has voxel type {array.dtype}; a label map must hold integers")
    bad = ~np.isfinite(array) | (array != np.round(array))
    if np.any(bad):
        index = tuple(int(v) for v in np.argwhere(bad)[0])
        raise InputError(
            f"{what} holds non-integer values (e.g. {array[index]} at voxel {list(index)}): "
            "a label map must hold whole numbers (0 = background); is this an image rather than a label map?"
        )
    lo, hi = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
    for dtype in (np.uint8, np.int16, np.int32, np.int64):
        info = np.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            return array.astype(dtype)
    raise InputError(f"{what} holds label values up to {hi:g}, beyond 64-bit integers")


def read_labelmap(path) -> Volume:
    """A label map (integer voxels, 0 = background); :class:`InputError` for non-integer values."""
    volume = read_volume(path)
    return volume.with_array(as_label_array(volume.array, f"label map {path}"))


# -- writing -------------------------------------------------------------------------------------
def storable_array(array: np.ndarray) -> np.ndarray:
    """The array in a voxel type every Slicer reader handles.

    bool -> uint8; float16 -> float32; 64-bit integers -> int32 when the values fit (Slicer does not
    display 64-bit integer volumes); everything else unchanged.
    """
    array = np.asarray(array)
    if array.dtype == bool:
        return array.astype(np.uint8)
    if array.dtype == np.float16:
        return array.astype(np.float32)
    if array.dtype in (np.int64, np.uint64) and array.size:
        info = np.iinfo(np.int32)
        if info.min <= int(array.min()) and int(array.max()) <= info.max:
            return array.astype(np.int32)
    return array


def lps_geometry(ijk_to_ras: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """NRRD ``space directions`` (one row per IJK axis) and ``space origin`` in LPS for an IJK-to-RAS matrix."""
    ijk_to_lps = LPS_TO_RAS @ np.asarray(ijk_to_ras, dtype=float)  # the flip is its own inverse
    return ijk_to_lps[:3, :3].T.copy(), ijk_to_lps[:3, 3].copy()


def nrrd_header(ijk_to_ras: np.ndarray) -> dict:
    """A gzip NRRD header for a 3D volume in Slicer's LPS space (what Slicer itself writes)."""
    directions, origin = lps_geometry(ijk_to_ras)
    return {
        "space": "left-posterior-superior",
        "space directions": directions,
        "space origin": origin,
        "kinds": ["domain", "domain", "domain"],
        "encoding": "gzip",
    }


def _write_nrrd(volume: Volume, path) -> None:
    import nrrd

    header = nrrd_header(volume.ijk_to_ras)
    nrrd.write(str(path), storable_array(volume.array), header, compression_level=6, index_order="F")


def _write_nifti(volume: Volume, path) -> None:
    import nibabel as nib

    direction = volume.direction
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
        # The qform holds only a rotation; readers that prefer it (ITK in some cases) would misplace voxels.
        raise InputError(f"{path}: this volume's axes are not perpendicular (a sheared grid), which NIfTI "
                         "cannot store faithfully; write it as .nrrd")
    image = nib.Nifti1Image(storable_array(volume.array), volume.ijk_to_ras)
    image.set_sform(volume.ijk_to_ras, code=1)
    image.set_qform(volume.ijk_to_ras, code=1)
    image.header.set_xyzt_units("mm")
    nib.save(image, str(path))


def write_volume(volume: Volume, path, overwrite: bool = False) -> Path:
    """Write a volume as ``.nrrd`` (LPS, gzip) or ``.nii`` / ``.nii.gz``, chosen by the extension.

    Returns the path written. :class:`InputError` if the file exists (unless ``overwrite``), its folder
    is missing, or the extension is not one of ``.nrrd``, ``.nii.gz``, ``.nii``.
    """
    path = Path(path)
    if not path.name.lower().endswith(WRITABLE_SUFFIXES):
        raise InputError(f"{path}: cannot write this file type; use one of {', '.join(WRITABLE_SUFFIXES)}")
    writer = _write_nifti if file_format(path) == "nifti" else _write_nrrd
    return write_atomically(path, overwrite, lambda tmp: writer(volume, tmp))
