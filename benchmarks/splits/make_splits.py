"""Regenerate the committed train/test splits from ../shared/data (run from the repository root):

    python benchmarks/splits/make_splits.py [DATA_FOLDER]   (ExtremeSegLib installed, or PYTHONPATH=.)

hippocampus.json: 150 train / 50 test cases (each case its own subject), seed 0.
acdc.json: 50 train / 20 test patients, both frames (ED, ES) of a patient on the same side, seed 0.
The files are committed; regenerating them gives the same lists.
"""

import json
import sys
from pathlib import Path

from ExtremeSegLib.evaluation import discover_cases, make_split

SPLITS = {
    # name: (folder under the data folder, test subjects, description)
    "hippocampus": ("hippocampus", 50, "MSD Task04 Hippocampus: 150 train / 50 test cases, seed 0"),
    "acdc": ("acdc", 20, "ACDC: 50 train / 20 test patients (both frames of a patient together), seed 0"),
}
SEED = 0


def main(data: Path) -> None:
    here = Path(__file__).resolve().parent
    for name, (folder, n_test, description) in SPLITS.items():
        cases = discover_cases(data / folder)
        split = make_split(cases, n_test, seed=SEED)
        subjects = {side: sorted({c.subject for c in cases if c.name in set(names)}) for side, names in split.items()}
        document = {
            "name": name,
            "description": description,
            "seed": SEED,
            "made_by": "benchmarks/splits/make_splits.py",
            "n_subjects": {side: len(s) for side, s in subjects.items()},
            **split,
        }
        (here / f"{name}.json").write_text(json.dumps(document, indent=1) + "\n")
        print(f"{name}: {len(split['train'])} train / {len(split['test'])} test cases "
              f"({len(subjects['train'])} / {len(subjects['test'])} subjects)")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[3] / "shared" / "data")
