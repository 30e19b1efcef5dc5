"""The static recipe catalog (what the Slicer panel lists without torch) and the recipe registry agree."""

import subprocess
import sys

from ExtremeSegLib.recipe_catalog import ANNOTATIONS, CATALOG, recipe_entry
from ExtremeSegLib.recipes import RECIPES, JobConfig


def test_every_registered_recipe_has_its_catalog_row_and_takes_its_strings_from_it():
    assert sorted(RECIPES) == sorted(entry.name for entry in CATALOG)
    for name, cls in RECIPES.items():
        entry = recipe_entry(name)
        assert (cls.name, cls.title, cls.annotation) == (entry.name, entry.title, entry.annotation)
        assert entry.annotation in ANNOTATIONS + ("labels",)


def test_a_recipe_s_default_inputs_need_clicks_exactly_when_its_row_says_its_models_do():
    for entry in CATALOG:
        config = JobConfig.from_dict({"recipe": entry.name, "output": "run", "cases": [{"image": "a.nii.gz"}]})
        assert config.inputs.needs_points == entry.clicks_at_inference, entry.name


def test_the_catalog_imports_no_torch():
    code = "import sys, ExtremeSegLib.recipe_catalog; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
