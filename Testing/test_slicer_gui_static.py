"""Static checks of the Slicer GUI files, which need the Slicer application to run.

Every module file compiles; the .ui is well-formed; every ``self.ui.<name>`` the panel uses exists in the
.ui, and every parameter the .ui binds (``SlicerParameterName``) exists on the parameter node; the
Segment Editor effect has what Slicer's scripted effect API calls and reads no undefined parameter; the
CMake file ships every script and resource; nothing in the headless part imports qt, ctk or slicer.app;
the extension index entry has the fields the index's schema allows.
"""

import ast
import json
import py_compile
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODULE = REPO / "ExtremeSeg"
UI_FILE = MODULE / "Resources" / "UI" / "ExtremeSeg.ui"
EFFECT_FILE = MODULE / "SegmentEditorExtremeSegLib" / "SegmentEditorEffect.py"
PANEL_FILE = MODULE / "ExtremeSegSlicerLib" / "widget.py"
PY_FILES = sorted(MODULE.rglob("*.py"))
#: the GUI files of the Lib package (qt, slicer.app); every other file there runs headless
GUI_FILES = {"widget.py", "installer.py"}
HEADLESS = sorted(p for p in (MODULE / "ExtremeSegSlicerLib").glob("*.py") if p.name not in GUI_FILES)


def _tree(path):
    return ast.parse(path.read_text(), filename=str(path))


def _class(tree, name):
    return next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == name)


def _ui_widgets():
    root = ET.parse(UI_FILE).getroot()
    return {w.get("name"): w for w in root.iter("widget")}, root


@pytest.mark.parametrize("path", PY_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_module_file_compiles(path, tmp_path):
    py_compile.compile(str(path), cfile=str(tmp_path / "out.pyc"), doraise=True)


def test_ui_is_well_formed_with_unique_names():
    root = ET.parse(UI_FILE).getroot()
    assert root.tag == "ui" and root.find("class").text == "ExtremeSeg"
    names = [w.get("name") for w in root.iter("widget")] + [lay.get("name") for lay in root.iter("layout")]
    assert len(names) == len(set(names)), "duplicate object names in the .ui"
    declared = {cw.find("class").text for cw in root.iter("customwidget")}
    used = {w.get("class") for w in root.iter("widget")}
    custom = {c for c in used if c.startswith(("ctk", "qMRML", "qSlicer"))}
    assert custom <= declared, f"custom widgets used but not declared: {custom - declared}"


def test_every_ui_name_the_panel_uses_exists():
    widgets, _ = _ui_widgets()
    source = PANEL_FILE.read_text()
    used = set(re.findall(r"self\.ui\.(\w+)", source))
    assert used, "the panel uses no widget at all?"
    assert used <= set(widgets), f"used in widget.py but missing from the .ui: {sorted(used - set(widgets))}"


def test_bound_parameters_exist_on_the_parameter_node():
    widgets, _ = _ui_widgets()
    bound = {}
    for name, w in widgets.items():
        for p in w.findall("property"):
            if p.get("name") == "SlicerParameterName":
                bound[name] = p.find("string").text
    assert bound
    node = _class(_tree(PANEL_FILE), "ExtremeSegParameterNode")
    fields = {stmt.target.id for stmt in node.body if isinstance(stmt, ast.AnnAssign)}
    assert set(bound.values()) <= fields, f"bound in the .ui but not parameters: {set(bound.values()) - fields}"


def test_mrml_widgets_get_the_scene():
    widgets, root = _ui_widgets()
    receivers = {c.find("receiver").text for c in root.iter("connection")
                 if c.find("slot").text == "setMRMLScene(vtkMRMLScene*)"}
    mrml = {name for name, w in widgets.items() if w.get("class").startswith(("qMRML", "qSlicerMarkups"))
            and w.get("class") != "qMRMLWidget"}
    assert mrml and mrml <= receivers, f"MRML widgets without setMRMLScene: {mrml - receivers}"


def test_module_classes_follow_slicer_naming():
    tree = _tree(MODULE / "ExtremeSeg.py")
    bases = {n.name: [ast.unparse(b) for b in n.bases] for n in ast.walk(tree) if isinstance(n, ast.ClassDef)}
    assert bases["ExtremeSeg"] == ["ScriptedLoadableModule"]
    assert "ScriptedLoadableModuleWidget" in bases["ExtremeSegWidget"]
    assert "ScriptedLoadableModuleLogic" in bases["ExtremeSegLogic"]
    assert "ExtremeSegNodeLogic" in bases["ExtremeSegLogic"]
    assert bases["ExtremeSegTest"] == ["ScriptedLoadableModuleTest"]
    widget = {f.name for f in _class(tree, "ExtremeSegWidget").body if isinstance(f, ast.FunctionDef)}
    assert {"setup", "cleanup", "enter", "exit", "onReload"} <= widget
    panel = {f.name for f in _class(_tree(PANEL_FILE), "ExtremeSegPanel").body if isinstance(f, ast.FunctionDef)}
    assert {"cleanup", "enter", "exit", "onSceneStartClose"} <= panel


def test_the_module_file_only_registers_and_lays_out():
    source = (MODULE / "ExtremeSeg.py").read_text()
    assert len(source.splitlines()) < 170  # SlicerNNUnet's module file: about 100 lines
    assert "self.ui." not in source and "pip_install" not in source


def test_the_module_declares_the_modules_it_uses():
    init = ast.unparse(next(f for f in _class(_tree(MODULE / "ExtremeSeg.py"), "ExtremeSeg").body
                            if isinstance(f, ast.FunctionDef) and f.name == "__init__"))
    found = re.search(r"self\.parent\.dependencies = (\[.*?\])", init)
    assert found and set(ast.literal_eval(found.group(1))) >= {"Markups", "Segmentations", "SegmentEditor"}


def test_the_panel_binds_with_a_tag_on_every_supported_slicer():
    source = PANEL_FILE.read_text()
    # connectGui returns no tag in Slicer 5.8: the panel must not depend on it
    assert ".connectGui(" not in source and ".disconnectGui(" not in source
    assert "ParameterNodeBinding(" in source


def test_the_ui_says_what_zero_means_and_filters_model_files():
    widgets, _ = _ui_widgets()
    for name in ("epochsSpinBox", "roundsSpinBox"):
        special = [p for p in widgets[name].findall("property") if p.get("name") == "specialValueText"]
        assert special and special[0].find("string").text, f"{name}: 0 must read as the method's default"
    model = {p.get("name"): p for p in widgets["modelPathLineEdit"].findall("property")}
    assert "ctkPathLineEdit::Files" in model["filters"].find("set").text
    assert "*.pt" in " ".join(s.text for s in model["nameFilters"].iter("string"))


def test_effect_has_what_slicer_calls():
    tree = _tree(EFFECT_FILE)
    # Slicer instantiates the class named after the file ("SegmentEditorEffect") from the folder's package
    effect = _class(tree, "SegmentEditorEffect")
    assert [ast.unparse(b) for b in effect.bases] == ["AbstractScriptedSegmentEditorEffect"]
    methods = {f.name for f in effect.body if isinstance(f, ast.FunctionDef)}
    required = {"__init__", "clone", "icon", "helpText", "setupOptionsFrame", "setMRMLDefaults",
                "updateGUIFromMRML", "updateMRMLFromGUI", "activate", "deactivate", "cleanup"}
    assert required <= methods, f"missing effect methods: {required - methods}"
    init = ast.unparse(next(f for f in effect.body if isinstance(f, ast.FunctionDef) and f.name == "__init__"))
    assert "scriptedEffect.name = " in init
    source = EFFECT_FILE.read_text()
    # Slicer's own auto-complete effects share "SegmentationResultPreview": this effect keeps its own reference
    assert re.search(r"^PREVIEW_REFERENCE_ROLE = \"ExtremeSeg\w+\"$", source, re.M)
    apply = ast.unparse(next(f for f in effect.body if isinstance(f, ast.FunctionDef) and f.name == "onApply"))
    assert apply.index("saveStateForUndo") < apply.index("apply_preview"), "undo state must be saved before applying"
    package = (MODULE / "SegmentEditorExtremeSegLib" / "__init__.py").read_text()
    assert "SegmentEditorEffect" in package
    registration = (MODULE / "ExtremeSeg.py").read_text()
    assert '"SegmentEditorExtremeSegLib" / "SegmentEditorEffect.py"' in registration


def test_the_effect_reads_no_parameter_slicer_never_stored():
    """Slicer stores no empty value (setCommonParameter skips it; parameterDefined wants a non-empty one), and
    reading an undefined parameter logs a critical error on every Segment Editor change."""
    effect = _class(_tree(EFFECT_FILE), "SegmentEditorEffect")
    for function in (f for f in effect.body if isinstance(f, ast.FunctionDef)):
        for call in (n for n in ast.walk(function) if isinstance(n, ast.Call)):
            name = ast.unparse(call.func)
            if name == "self.scriptedEffect.setParameterDefault":
                value = call.args[1]
                assert not (isinstance(value, ast.Constant) and value.value == ""), "an empty default is never stored"
            if name == "self.scriptedEffect.parameter":
                assert function.name == "_parameter", f"{function.name} reads a parameter without parameterDefined"
    helper = ast.unparse(next(f for f in effect.body if isinstance(f, ast.FunctionDef) and f.name == "_parameter"))
    assert "parameterDefined" in helper


def test_the_extension_index_entry_follows_the_index_schema():
    """Fields of Slicer's slicer-extension-catalog-entry-schema-v1.0.1.json (additionalProperties: false)."""
    allowed = {"$schema": str, "category": str, "scm_url": str, "scm_revision": str, "scm_type": str,
               "build_dependencies": list, "build_subdirectory": str, "enabled": bool, "tier": int}
    entry = json.loads((REPO / "ExtremeSeg.json").read_text())
    assert {"$schema", "category", "scm_url"} <= set(entry) <= set(allowed)
    assert all(isinstance(entry[k], allowed[k]) for k in entry)
    assert entry["$schema"].endswith("slicer-extension-catalog-entry-schema-v1.0.1.json#")
    assert entry.get("scm_type", "git") in ("git", "local") and entry.get("tier", 5) in (1, 3, 5)
    top = (REPO / "CMakeLists.txt").read_text()
    assert f'set(EXTENSION_CATEGORY "{entry["category"]}")' in top
    depends = re.search(r'set\(EXTENSION_DEPENDS "([^"]*)"\)', top).group(1).split()
    assert entry["build_dependencies"] == depends  # the index builds the extensions it depends on first
    for key in ("EXTENSION_HOMEPAGE", "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):
        value = re.search(rf'set\({key} "([^"]*)"\)', top).group(1)
        assert value == "" or value.startswith("https://"), f"{key}: a real URL or nothing"
    assert "example.com" not in top and "ExtremeSeg/SlicerExtremeSeg" not in top  # no placeholder URLs


def test_headless_files_import_no_gui():
    forbidden = {"qt", "ctk", "slicer.app", "SegmentEditorEffects"}
    for path in HEADLESS:
        tree = _tree(path)
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
        assert not imported & forbidden, f"{path.name} imports {imported & forbidden}"
        uses_app = [n for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr in ("app", "modules")
                    and isinstance(n.value, ast.Name) and n.value.id == "slicer"]
        assert not uses_app, f"{path.name} uses slicer.app or slicer.modules (line {uses_app and uses_app[0].lineno})"


def test_cmake_ships_every_script_and_resource():
    cmake = (MODULE / "CMakeLists.txt").read_text()
    listed = set(re.findall(r"^\s+([\w/${}]+\.(?:py|ui|png))\s*$", cmake, re.M))
    listed = {item.replace("${MODULE_NAME}", "ExtremeSeg") for item in listed}
    on_disk = {str(p.relative_to(MODULE)) for p in PY_FILES}
    on_disk |= {str(p.relative_to(MODULE)) for p in MODULE.rglob("*") if p.suffix in (".ui", ".png")}
    assert on_disk == listed, f"not shipped: {on_disk - listed}; listed but absent: {listed - on_disk}"
    assert "slicerMacroBuildScriptedModule(" in cmake and "slicer_add_python_unittest(" in cmake
    assert "ExtremeSegLib/*.py" in cmake  # the core package is shipped next to the module
    top = (REPO / "CMakeLists.txt").read_text()
    assert "add_subdirectory(ExtremeSeg)" in top
    assert (REPO / "Resources" / "ExtremeSeg.png").exists()  # the extension icon, for EXTENSION_ICONURL
    assert "Resources/SampleData" in cmake  # the sample cases ship with the module


def _method_source(path, class_name, method):
    body = _class(_tree(path), class_name).body
    return ast.unparse(next(f for f in body if isinstance(f, ast.FunctionDef) and f.name == method))


def test_browsing_volumes_creates_no_point_list():
    """Showing a volume looks its point list up; a list is made only by "Place points" (or painting scribbles)."""
    shown = _method_source(PANEL_FILE, "ExtremeSegPanel", "updateAnnotationNode")
    assert "create=False" in shown and "create=True" not in shown
    assert "create=True" in _method_source(PANEL_FILE, "ExtremeSegPanel", "onStartPoints")
    assert "setSliceViewerLayers" in _method_source(PANEL_FILE, "ExtremeSegPanel", "onParameterNodeModified")


def test_reload_spares_a_running_job_and_the_self_test_skips_without_torch():
    reload = _method_source(MODULE / "ExtremeSeg.py", "ExtremeSegWidget", "onReload")
    assert reload.index("self.panel.busy") < reload.index("ScriptedLoadableModuleWidget.onReload(self)")
    assert "importlib.reload" in reload
    run_test = _method_source(MODULE / "ExtremeSeg.py", "ExtremeSegTest", "runTest")
    assert run_test.index("missing_requirements()") < run_test.index("scenarios.extreme_points_to_segmentation")
