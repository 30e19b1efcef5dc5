"""Finding evaluation cases (image + ground truth [+ scribbles]) in a folder.

Recognised layouts, tried in this order:

- Medical Segmentation Decathlon: ``images/`` + ``labels/`` (or ``imagesTr/`` + ``labelsTr/``) holding files
  of the same names; each case is its own subject.
- ``<name>_image.<ext>`` + ``<name>_label.<ext>`` (+ optional ``<name>_scribble.<ext>``) side by side.
  ACDC names (``patientNNN_frameFF``) make ``patientNNN`` the subject, so both frames of a patient stay
  in the same split; any other name is its own subject.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..errors import InputError

#: volume file endings the readers understand
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr")

_MSD_FOLDERS = (("images", "labels"), ("imagesTr", "labelsTr"))
_ACDC_NAME = re.compile(r"^(patient\d+)_frame\d+$")
_ROLE = re.compile(r"^(?P<name>.+)_(?P<role>image|label|scribble)$")


@dataclass(frozen=True)
class Case:
    """One evaluation case: where its files are and which subject (patient) it belongs to."""

    name: str
    image: Path
    label: Path
    scribble: Optional[Path] = None
    subject: str = ""

    def __post_init__(self):
        if not self.subject:
            object.__setattr__(self, "subject", self.name)


def volume_stem(path: Path) -> Optional[str]:
    """File name without its volume ending (``case_001.nii.gz`` -> ``case_001``); None if not a volume file."""
    name = path.name
    if name.startswith("."):  # macOS "._" resource forks ship inside the MSD archives
        return None
    for suffix in VOLUME_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


def _volumes(folder: Path) -> dict:
    found = {}
    for path in sorted(folder.iterdir()):
        stem = volume_stem(path)
        if stem is not None and path.is_file():
            if stem in found:
                raise InputError(f"{folder} holds two files for case {stem!r} ({found[stem].name} and {path.name}); "
                                 "keep one")
            found[stem] = path
    return found


def _msd_cases(images: Path, labels: Path) -> list:
    image_files, label_files = _volumes(images), _volumes(labels)
    missing = sorted(set(image_files) - set(label_files))
    if missing:
        raise InputError(f"{len(missing)} image(s) in {images} have no label file of the same name in {labels} "
                         f"(first: {image_files[missing[0]].name}); add the labels or move those images out")
    return [Case(name, image_files[name], label_files[name]) for name in sorted(image_files)]


def _named_cases(folder: Path) -> list:
    roles: dict = {}
    for stem, path in _volumes(folder).items():
        match = _ROLE.match(stem)
        if match:
            roles.setdefault(match["name"], {})[match["role"]] = path
    cases = []
    for name in sorted(roles):
        files = roles[name]
        if "image" not in files or "label" not in files:
            have = ", ".join(p.name for p in files.values())
            raise InputError(f"case {name!r} in {folder} needs both {name}_image and {name}_label files, found only "
                             f"{have}; add the missing file or move the case out")
        acdc = _ACDC_NAME.match(name)
        cases.append(Case(name, files["image"], files["label"], files.get("scribble"),
                          acdc.group(1) if acdc else name))
    return cases


def discover_cases(folder) -> list:
    """All cases in ``folder`` (MSD layout, or ``<name>_image``/``<name>_label`` files), sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"data folder {folder} does not exist or is not a folder")
    for image_dir, label_dir in _MSD_FOLDERS:
        if (folder / image_dir).is_dir() and (folder / label_dir).is_dir():
            cases = _msd_cases(folder / image_dir, folder / label_dir)
            if not cases:
                raise InputError(f"{folder / image_dir} holds no volume files ({', '.join(VOLUME_SUFFIXES)})")
            return cases
    cases = _named_cases(folder)
    if not cases:
        raise InputError(
            f"no cases found in {folder}: expected images/ + labels/ (or imagesTr/ + labelsTr/) with files of the "
            "same names, or <name>_image.nii.gz + <name>_label.nii.gz files (optional <name>_scribble.nii.gz)"
        )
    return cases


def select_cases(cases: list, names: list, what: str = "the split") -> list:
    """The cases called ``names``, in that order; :class:`InputError` if any is not among ``cases``."""
    by_name = {case.name: case for case in cases}
    missing = [name for name in names if name not in by_name]
    if missing:
        raise InputError(f"{len(missing)} case(s) of {what} are not in the data folder (first: {missing[0]}); "
                         "point --data at the full data set the split was made for, or leave out the split")
    return [by_name[name] for name in names]
