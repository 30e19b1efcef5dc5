"""The bundled sample cases (``Resources/SampleData``) as entries of Slicer's Sample Data module.

Each entry names its files and their SHA-256, which the Sample Data module checks when it loads them (a
damaged or replaced file is refused, not shown). :func:`sample_data_sources` turns the table into the
keyword arguments of ``SampleData.SampleDataLogic.registerCustomSampleDataSource`` (the module calls it at
startup); the files are local, so their URIs are ``file://`` URLs. Headless: no slicer import.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: the Sample Data module's section for these cases
CATEGORY = "ExtremeSeg"


@dataclass(frozen=True)
class SampleFile:
    path: str  # relative to Resources/SampleData
    node_name: str
    file_type: str  # Slicer's file type: VolumeFile, MarkupsFile, ...
    sha256: str


@dataclass(frozen=True)
class SampleCase:
    name: str
    files: tuple


def _hippocampus(case: str, image_sha: str, points_sha: str) -> SampleCase:
    return SampleCase(f"Hippocampus {case} (MRI, 6 extreme points)", (
        SampleFile(f"hippocampus/images/hippocampus_{case}.nii.gz", f"hippocampus_{case}", "VolumeFile", image_sha),
        SampleFile(f"hippocampus/extreme_points/hippocampus_{case}.mrk.json", f"hippocampus_{case} extreme points",
                   "MarkupsFile", points_sha)))


#: the cases, three hippocampus volumes with their clicks (enough for a first training) and two cardiac frames
SAMPLE_CASES = (
    _hippocampus("006", "f57bc01710fa0905a7053c06d4972b827ae72bc0a2ece2f931e9fbb30d0e8a54",
                 "924c0a04edb2e2cc457317cc3d84892d16b995726068735f4e33270922b322ed"),
    _hippocampus("014", "cb4d85b584f170d404578beb0eeeb018ee3f961db7dbc247c9ac49381bfad456",
                 "ee882bbb8e72d8eb60856e030ce9d783b3a18f3bcff94393595991632eead148"),
    _hippocampus("015", "f9ee0fe118531cc2230181d86a6cf440717f93882c47d86bb1462720187ebd41",
                 "2a33b61c87b0eefc4bb41b87e757e3cf6592c4b5f795c34d0931029823a2750d"),
    SampleCase("ACDC patient054 end-diastole (cine MRI)", (
        SampleFile("acdc/patient054_frame01_image.nii.gz", "patient054_frame01", "VolumeFile",
                   "4efce3f1ea8371541ae5c255663b18b15a8248fc6938648a8eb700dfc12aeb7d"),)),
    SampleCase("ACDC patient054 end-systole (cine MRI)", (
        SampleFile("acdc/patient054_frame12_image.nii.gz", "patient054_frame12", "VolumeFile",
                   "f4bc9bab92a99d232a19ce36301ef74283df2340c679a56102b5e9963b58a36c"),)),
)


def sample_data_root(module_dir) -> Path | None:
    """Where the sample files are: beside the module in a built extension, at the top of a source checkout."""
    module_dir = Path(module_dir)
    for candidate in (module_dir / "Resources" / "SampleData", module_dir.parent / "Resources" / "SampleData"):
        if candidate.is_dir():
            return candidate
    return None


def sample_data_sources(root) -> list:
    """``registerCustomSampleDataSource`` keyword arguments, one dict per case whose files are all in ``root``."""
    root = Path(root)
    sources = []
    for case in SAMPLE_CASES:
        paths = [root / f.path for f in case.files]
        if not all(p.is_file() for p in paths):
            continue
        sources.append({
            "category": CATEGORY,
            "sampleName": case.name,
            "uris": [p.resolve().as_uri() for p in paths],
            "fileNames": [p.name for p in paths],
            "nodeNames": [f.node_name for f in case.files],
            "loadFileType": [f.file_type for f in case.files],
            "checksums": [f"SHA256:{f.sha256}" for f in case.files],
        })
    return sources
