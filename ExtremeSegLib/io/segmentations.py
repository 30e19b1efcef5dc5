"""Segmentations as lists of named binary masks, and Slicer's ``.seg.nrrd`` file.

A ``.seg.nrrd`` is an NRRD in LPS space whose voxels hold label values, either 3D (one *layer*: segments do
not overlap) or 4D with a leading ``list`` axis of layers (segments overlap). Key/value fields describe
the segments: ``Segment{n}_ID``, ``_Name``, ``_Color``, ``_LabelValue`` (its value in its layer), ``_Layer``,
``_Extent`` (voxel box of its layer, relative to the stored array), plus ``Segmentation_*`` fields; the
stored array may be cropped, ``Segmentation_ReferenceImageExtentOffset`` placing it in the reference grid,
and the ``Reference image geometry`` conversion parameter naming that grid.

Reading gives every segment as a mask on one grid: the reference grid (grown if a segment reaches past it)
when the file names one matching its voxels, otherwise the grid of the stored array. Writing stores the
full grid (offset 0), one layer when no segments overlap, layered otherwise, and records the grid as the
reference geometry so that Slicer edits the segments on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..volume import Volume
from .volumes import (
    as_label_array,
    file_format,
    nrrd_header,
    nrrd_ijk_to_ras,
    nrrd_spatial_axes,
    read_labelmap,
    read_nrrd,
    require_readable_file,
    volume_from_nrrd,
    write_atomically,
)

#: Distinct colours (RGB 0..1) given to segments that come without one.
PALETTE = (
    (0.90, 0.30, 0.25), (0.30, 0.70, 0.35), (0.25, 0.45, 0.85), (0.95, 0.75, 0.20), (0.65, 0.35, 0.80),
    (0.20, 0.75, 0.80), (0.95, 0.50, 0.65), (0.55, 0.40, 0.25), (0.60, 0.85, 0.30), (0.40, 0.40, 0.60),
)
_REFERENCE_GEOMETRY = "Reference image geometry"
_EMPTY_EXTENT = "0 -1 0 -1 0 -1"


@dataclass(eq=False)
class Segment:
    """One named binary mask on a volume's voxel grid.

    ``mask`` is bool ``[i, j, k]`` on the geometry it comes with; ``color`` is RGB in 0..1 (``None``: one
    from :data:`PALETTE`); ``segment_id`` is Slicer's segment ID when known; ``label_value`` is the value
    the segment takes in a single label map (``None``: its 1-based position in the list).
    """

    name: str
    mask: np.ndarray
    color: tuple | None = None
    segment_id: str | None = None
    label_value: int | None = None

    def __post_init__(self):
        mask = np.asarray(self.mask)
        if mask.ndim != 3:
            raise InputError(f"segment {self.name!r}: the mask must be 3D, got shape {mask.shape}")
        if mask.dtype != bool:
            if np.any((mask != 0) & (mask != 1)):
                raise InputError(
                    f"segment {self.name!r}: the mask holds values other than 0 and 1; "
                    "pass a boolean mask (e.g. labels == value)"
                )
            mask = mask.astype(bool)
        self.mask = mask
        if self.color is not None:
            color = tuple(float(c) for c in self.color)
            if len(color) != 3 or not all(0.0 <= c <= 1.0 for c in color):
                raise InputError(f"segment {self.name!r}: colour must be 3 values in 0..1, got {self.color!r}")
            self.color = color
        if self.label_value is not None:
            self.label_value = int(self.label_value)


def segment_color(segment: Segment, n: int) -> tuple:
    """The segment's colour, or the n-th palette colour when it has none."""
    return segment.color if segment.color is not None else PALETTE[n % len(PALETTE)]


def _require_on_geometry(segments, geometry: Volume) -> None:
    for segment in segments:
        if segment.mask.shape != geometry.shape:
            raise InputError(
                f"segment {segment.name!r} has shape {list(segment.mask.shape)}, "
                f"not the shape {list(geometry.shape)} of the volume it belongs to"
            )


def label_values(segments) -> list[int]:
    """Each segment's value in a single label map: its ``label_value`` or else its 1-based position.

    :class:`InputError` if a value is not positive or two segments share one.
    """
    values, owner = [], {}
    for n, segment in enumerate(segments):
        value = segment.label_value if segment.label_value is not None else n + 1
        if value <= 0:
            raise InputError(f"segment {segment.name!r} has label value {value}; label values must be 1 or more")
        if value in owner:
            raise InputError(
                f"segments {owner[value]!r} and {segment.name!r} both have label value {value}; "
                "give them different label values"
            )
        owner[value] = segment.name
        values.append(value)
    return values


def _label_dtype(max_value: int):
    return np.uint8 if max_value <= np.iinfo(np.uint8).max else np.uint16 if max_value <= 65535 else np.int32


# -- label maps <-> segments -----------------------------------------------------------------------
def labelmap_to_segments(labels: Volume, names: dict | None = None) -> list[Segment]:
    """One segment per non-zero label value (ascending), keeping the value as ``label_value``.

    ``names`` maps values to segment names; every value it names gets a segment, an empty one if the
    value does not occur (so a class list stays the same across volumes). Other values are named
    ``Label_<value>``.
    """
    array = as_label_array(labels.array, "the label map")
    names = {int(k): str(v) for k, v in (names or {}).items()}
    values = sorted(set(int(v) for v in np.unique(array) if v != 0) | {v for v in names if v != 0})
    return [
        Segment(names.get(v, f"Label_{v}"), array == v, PALETTE[n % len(PALETTE)], None, v)
        for n, v in enumerate(values)
    ]


def segments_to_labelmap(segments, geometry: Volume) -> Volume:
    """A label map on ``geometry``: each segment's voxels take its value from :func:`label_values`.

    :class:`InputError` if two segments overlap (a single label map cannot hold both); write those
    with :func:`write_segmentation`, which stores overlapping segments in layers.
    """
    _require_on_geometry(segments, geometry)
    values = label_values(segments)
    out = np.zeros(geometry.shape, _label_dtype(max(values, default=0)))
    name_of = {}
    for segment, value in zip(segments, values):
        clash = segment.mask & (out != 0)
        if np.any(clash):
            other = name_of[int(out[tuple(np.argwhere(clash)[0])])]
            raise InputError(
                f"segments {other!r} and {segment.name!r} overlap in {int(clash.sum())} voxels, "
                "so they cannot share one label map; save them as a .seg.nrrd segmentation instead"
            )
        out[segment.mask] = value
        name_of[value] = segment.name
    return geometry.with_array(out)


# -- .seg.nrrd reading -------------------------------------------------------------------------------
def _ints(text, count: int, what: str, path) -> np.ndarray:
    try:
        values = np.array([int(v) for v in str(text).split()], dtype=np.int64)
    except ValueError:
        values = np.empty(0)
    if values.size != count:
        raise InputError(f"{path}: field {what} should hold {count} integers, got {text!r}")
    return values


def _reference_geometry(header: dict):
    """(4x4 IJK-to-RAS, extent (6,)) of the ``Reference image geometry`` conversion parameter, or None."""
    for parameter in str(header.get("Segmentation_ConversionParameters", "")).split("&"):
        name, _, rest = parameter.partition("|")
        if name == _REFERENCE_GEOMETRY:
            try:
                values = [float(v) for v in rest.partition("|")[0].split(";") if v.strip()]
            except ValueError:
                return None
            if len(values) == 22:
                return np.array(values[:16]).reshape(4, 4), np.array(values[16:], dtype=np.int64)
    return None


def _parse_color(text):
    """``"r g b"`` (0..1) as a tuple, or None when absent or malformed (a palette colour is used)."""
    try:
        color = tuple(float(c) for c in str(text).split())
    except ValueError:
        return None
    return color if len(color) == 3 and all(0.0 <= c <= 1.0 for c in color) else None


def _translate(offset) -> np.ndarray:
    m = np.eye(4)
    m[:3, 3] = offset
    return m


def _segments_from_seg_nrrd(data: np.ndarray, header: dict, path) -> tuple[Volume, list[Segment]]:
    axes = nrrd_spatial_axes(header, data.ndim)
    layer_axes = [a for a in range(data.ndim) if a not in axes]
    if len(axes) != 3 or len(layer_axes) > 1:
        raise InputError(f"{path}: a segmentation must be 3D or 3D with one layer axis, got shape {list(data.shape)}")
    layers = np.moveaxis(data, layer_axes[0], 0) if layer_axes else data[None]
    layers = as_label_array(layers, f"segmentation {path}")
    size = np.array(layers.shape[1:])
    file_ijk_to_ras = nrrd_ijk_to_ras(header, axes, path)

    # Stored array -> reference grid: the file origin already includes the offset (for readers that ignore it).
    offset_text = header.get("Segmentation_ReferenceImageExtentOffset", "0 0 0")
    offset = _ints(offset_text, 3, "Segmentation_ReferenceImageExtentOffset", path)
    ref_ijk_to_ras = file_ijk_to_ras @ _translate(-offset)
    lo, hi = offset, offset + size - 1
    reference = _reference_geometry(header)
    if reference is not None and np.allclose(reference[0], ref_ijk_to_ras, rtol=1e-4, atol=1e-3):
        lo, hi = np.minimum(lo, reference[1][0::2]), np.maximum(hi, reference[1][1::2])
    shape = tuple(int(v) for v in hi - lo + 1)
    geometry = Volume(np.broadcast_to(np.uint8(0), shape), ref_ijk_to_ras @ _translate(lo))
    place = tuple(slice(int(a), int(a + n)) for a, n in zip(offset - lo, size))

    segments = []
    while f"Segment{len(segments)}_ID" in header:
        n = len(segments)
        fields = {key.removeprefix(f"Segment{n}_"): value for key, value in header.items()
                  if key.startswith(f"Segment{n}_")}
        layer = int(fields.get("Layer", n))  # files without layers (Slicer < 4.11): one layer per segment
        if not 0 <= layer < len(layers):
            raise InputError(f"{path}: segment {n} is in layer {layer}, but the file has {len(layers)} layers")
        value = int(fields.get("LabelValue", 1))
        whole = f"0 {size[0] - 1} 0 {size[1] - 1} 0 {size[2] - 1}"
        extent = _ints(fields.get("Extent", whole), 6, f"Segment{n}_Extent", path)
        box = tuple(slice(max(int(a), 0), max(int(b) + 1, 0)) for a, b in zip(extent[0::2], extent[1::2]))
        stored = np.zeros(tuple(size), bool)
        stored[box] = layers[layer][box] == value
        mask = np.zeros(geometry.shape, bool)
        mask[place] = stored
        segments.append(Segment(
            name=str(fields.get("Name", fields["ID"])), mask=mask, color=_parse_color(fields.get("Color")),
            segment_id=str(fields["ID"]), label_value=value if len(layers) == 1 else None,
        ))
    if not segments:
        raise InputError(f"{path} contains no segments; add a segment in Slicer's Segment Editor and save again")
    return geometry, segments


def _is_seg_nrrd(header: dict) -> bool:
    return any(key.startswith(("Segment0_", "Segmentation_")) for key in header)


def read_segmentation(path) -> tuple[Volume, list[Segment]]:
    """The grid and segments of a Slicer ``.seg.nrrd`` (single- or multi-layer).

    A plain label map (NRRD or NIfTI without segment fields) is read as one segment per label value, as
    Slicer imports it. The returned :class:`Volume` gives the geometry; its array is a read-only zero
    placeholder. :class:`InputError` for missing or unreadable files and files without segments.
    """
    fmt = file_format(path)
    path = require_readable_file(path)
    if fmt == "nrrd":
        data, header = read_nrrd(path)
        if _is_seg_nrrd(header):
            return _segments_from_seg_nrrd(data, header, path)
        labels = volume_from_nrrd(data, header, path)
        labels = labels.with_array(as_label_array(labels.array, f"label map {path}"))
    else:
        labels = read_labelmap(path)
    segments = labelmap_to_segments(labels)
    if not segments:
        raise InputError(f"{path} contains no segments (every voxel is 0)")
    return labels.with_array(np.broadcast_to(np.uint8(0), labels.shape)), segments


# -- .seg.nrrd writing ------------------------------------------------------------------------------
def _assign_layers(segments) -> list[list[int]]:
    """Greedy: each segment goes to the first layer it does not overlap."""
    layers, occupied = [], []
    for n, segment in enumerate(segments):
        for members, used in zip(layers, occupied):
            if not np.any(used & segment.mask):
                members.append(n)
                used |= segment.mask
                break
        else:
            layers.append([n])
            occupied.append(segment.mask.copy())
    return layers


def _extent_text(array: np.ndarray) -> str:
    """``"i0 i1 j0 j1 k0 k1"`` bounding box of the non-zero voxels (Slicer's empty extent if none)."""
    if not np.any(array):
        return _EMPTY_EXTENT
    bounds = []
    for axis in range(3):
        hit = np.flatnonzero(np.any(array, axis=tuple(a for a in range(3) if a != axis)))
        bounds += [int(hit[0]), int(hit[-1])]
    return " ".join(str(v) for v in bounds)


def _geometry_text(geometry: Volume) -> str:
    """Slicer's serialised image geometry: 16 IJK-to-RAS values (row by row) then the 6 extent values."""
    extent = [v for n in geometry.shape for v in (0, n - 1)]
    return "".join(f"{v!r};" for v in geometry.ijk_to_ras.ravel().tolist()) + "".join(f"{v};" for v in extent)


def _unique_ids(segments) -> list[str]:
    ids, seen = [], set()
    for n, segment in enumerate(segments):
        base = segment.segment_id or f"Segment_{n + 1}"
        candidate, k = base, 2
        while candidate in seen:
            candidate, k = f"{base}_{k}", k + 1
        seen.add(candidate)
        ids.append(candidate)
    return ids


def write_segmentation(path, geometry: Volume, segments, overwrite: bool = False) -> Path:
    """Write segments (masks on ``geometry``) as a Slicer ``.seg.nrrd``.

    One layer when no segments overlap (each voxel holds its segment's label value, see
    :func:`label_values`), otherwise a 4D file with one layer per group of non-overlapping segments.
    :class:`InputError` for no segments, masks off the geometry, duplicate label values, an existing
    file (unless ``overwrite``) or a name not ending in ``.seg.nrrd``.
    """
    import nrrd

    path = Path(path)
    if not path.name.lower().endswith(".seg.nrrd"):
        raise InputError(f"{path}: segmentations are written as .seg.nrrd files (Slicer opens those as segmentations)")
    segments = list(segments)
    if not segments:
        raise InputError("there are no segments to write")
    _require_on_geometry(segments, geometry)
    values = label_values(segments)
    layers = _assign_layers(segments)
    data = np.zeros((len(layers),) + tuple(geometry.shape), _label_dtype(max(values)))
    layer_of = {}
    for layer, members in enumerate(layers):
        for n in members:
            data[layer][segments[n].mask] = values[n]
            layer_of[n] = layer
    layer_extents = [_extent_text(layer) for layer in data]

    header = nrrd_header(geometry.ijk_to_ras)
    if len(layers) > 1:
        header["space directions"] = np.vstack([np.full((1, 3), np.nan), header["space directions"]])
        header["kinds"] = ["list"] + header["kinds"]
    for n, (segment, segment_id) in enumerate(zip(segments, _unique_ids(segments))):
        header.update({
            f"Segment{n}_ID": segment_id,
            f"Segment{n}_Name": segment.name,
            f"Segment{n}_NameAutoGenerated": "0",
            f"Segment{n}_Color": " ".join(f"{c:.6g}" for c in segment_color(segment, n)),
            f"Segment{n}_ColorAutoGenerated": "0",
            f"Segment{n}_LabelValue": str(values[n]),
            f"Segment{n}_Layer": str(layer_of[n]),
            # Slicer loads a layer's voxels within the extent of its first segment: give all the layer's box.
            f"Segment{n}_Extent": layer_extents[layer_of[n]],
        })
    header.update({
        "Segmentation_MasterRepresentation": "Binary labelmap",
        "Segmentation_ContainedRepresentationNames": "Binary labelmap|",
        "Segmentation_ReferenceImageExtentOffset": "0 0 0",
        "Segmentation_ConversionParameters":
            # Slicer reads only parameters terminated by "&".
            f"{_REFERENCE_GEOMETRY}|{_geometry_text(geometry)}|Image geometry the labelmaps are stored on.&",
    })
    stored = data[0] if len(layers) == 1 else data  # layered: (layer, i, j, k), the layer axis fastest in the file
    return write_atomically(
        path, overwrite, lambda tmp: nrrd.write(str(tmp), stored, header, compression_level=6, index_order="F")
    )
