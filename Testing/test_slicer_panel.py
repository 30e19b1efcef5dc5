"""What the panel and the effect rely on, headless with real slicer-core MRML.

- the parameter-node binding over a module life cycle (enter, exit, scene close) on Slicer 5.8's wrapper
  behaviour, replayed with a stand-in (the real wrapper needs Qt; see ``V58Wrapper``);
- volumes identified by the node itself, not a reused ID, after a scene close; detached jobs;
- deleted training volumes, unset paths, when Train may start, what a model file is (read once);
- the bundled sample data as the Sample Data module registers it (checksums);
- the effect's masking (editable area, intensity range) and its model step in a child process.
"""

import hashlib
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "ExtremeSeg"))

import slicer_scene  # noqa: E402

slicer_scene.require_slicer()
mrml_scene = slicer_scene.mrml_scene  # the fixture

import slicer  # noqa: E402
from ExtremeSegSlicerLib import sample_data, scenarios  # noqa: E402
from ExtremeSegSlicerLib.logic import ExtremeSegNodeLogic, PreparedJob, optional_path, present_nodes  # noqa: E402
from ExtremeSegSlicerLib.parameter_binding import ParameterNodeBinding, WrapperCache, bound_widgets  # noqa: E402
from ExtremeSegSlicerLib.scribble_preview import apply_preview, editable_mask, prior_from_files  # noqa: E402

from ExtremeSegLib import mrml  # noqa: E402
from ExtremeSegLib.child_process import RunState  # noqa: E402
from ExtremeSegLib.errors import InputError  # noqa: E402
from ExtremeSegLib.io.segmentations import Segment  # noqa: E402
from ExtremeSegLib.volume import Volume  # noqa: E402


# -- 1. the parameter node binding ---------------------------------------------------------------------
class V58Wrapper:
    """Stand-in for Slicer 5.8's parameter node wrapper, only as far as the GUI bookkeeping goes (the real one
    needs Qt): ``connectParametersToGui`` stores the mapping under a new tag and returns it; ``connectGui``
    does the same but returns nothing (the 5.8 bug); ``disconnectGui`` removes a known tag and ignores
    others. It tests OUR bookkeeping, not Slicer's wrapper."""

    def __init__(self, parameterNode):
        self.parameterNode = parameterNode
        self.connected = {}
        self._next = 0

    def connectParametersToGui(self, mapping):
        tag, self._next = self._next, self._next + 1
        self.connected[tag] = mapping
        return tag

    def connectGui(self, gui):
        self.connectParametersToGui(bound_widgets(gui))

    def disconnectGui(self, tag):
        self.connected.pop(tag, None)


class FakeWidget:
    def __init__(self, parameter):
        self._parameter = parameter

    def property(self, name):
        return self._parameter if name == "SlicerParameterName" else None


class FakeUi:  # what slicer.util.childWidgetVariables returns: widgets as attributes
    def __init__(self):
        self.annotationComboBox = FakeWidget("annotation")
        self.deviceComboBox = FakeWidget("device")
        self.statusLabel = FakeWidget(None)


def test_the_bound_widgets_are_those_naming_a_parameter():
    ui = FakeUi()
    assert bound_widgets(ui) == {"annotation": ui.annotationComboBox, "device": ui.deviceComboBox}


def test_the_5_8_connect_gui_piles_up_connections_without_a_tag():
    """Why the panel does not use connectGui: on 5.8 every module entry adds one more set of connectors."""
    wrapper = V58Wrapper(object())
    for _ in range(3):  # enter, exit, enter, exit, enter as the Slicer template wrote it
        tag = wrapper.connectGui(FakeUi())
        wrapper.disconnectGui(tag)
    assert len(wrapper.connected) == 3


def test_one_connection_at_a_time_over_the_module_life_cycle(mrml_scene):
    node = mrml_scene.scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode")
    cache = WrapperCache(V58Wrapper)
    binding = ParameterNodeBinding(bound_widgets(FakeUi()))
    wrapper = cache.wrapper_for(node)
    # the panel's sequence: setup + enter (initialised twice), exit (stays bound), enter, scene close, enter
    binding.connect(wrapper)
    binding.connect(cache.wrapper_for(node))
    assert cache.wrapper_for(node) is wrapper and len(wrapper.connected) == 1
    binding.connect(cache.wrapper_for(node))  # enter again after exit
    assert len(wrapper.connected) == 1 and wrapper._next == 1  # no second connectParametersToGui call
    binding.connect(None)  # scene start close
    assert wrapper.connected == {} and not binding.connected
    other = mrml_scene.scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode")  # the new scene's parameter node
    second = cache.wrapper_for(other)
    binding.connect(second)
    assert second is not wrapper and len(second.connected) == 1 and wrapper.connected == {}
    assert set(next(iter(second.connected.values()))) == {"annotation", "device"}


# -- 3. jobs, volumes and scene close ------------------------------------------------------------------
def test_a_volume_is_not_confused_with_a_node_that_reuses_its_id(mrml_scene):
    image, _ = scenarios.synthetic_case()
    volume = mrml.add_volume_node(image, "Case 1", scene=mrml_scene.scene)
    job = PreparedJob("training", "Training", Path("."), Path("."), [], {"Case_1": volume})
    assert job.volume_node("Case_1", mrml_scene.scene) is volume and job.cases == {"Case_1": volume.GetID()}
    old_id = volume.GetID()
    mrml_scene.scene.Clear(0)  # File > Close scene while the job runs
    reused = mrml.add_volume_node(image, "Case 1", scene=mrml_scene.scene)
    assert reused.GetID() == old_id  # the same ID and name again: an ID alone would mistake it
    assert job.volume_node("Case_1", mrml_scene.scene) is None


def test_a_detached_job_adds_nothing_to_the_scene(mrml_scene, tmp_path):
    image, _ = scenarios.synthetic_case()
    volume = mrml.add_volume_node(image, "Case 1", scene=mrml_scene.scene)
    logic = ExtremeSegNodeLogic(mrml_scene.scene)
    job = PreparedJob("training", "Training", tmp_path, tmp_path, [], {"Case_1": volume})
    job.detach()
    state = RunState(status="done", outputs={"model": str(tmp_path / "model.pt"),
                                             "segmentations": [str(tmp_path / "Case_1.seg.nrrd")]})
    before = mrml_scene.scene.GetNumberOfNodes()
    results = logic.import_training_results(job, state)  # the .seg.nrrd is not even read
    assert results.segmentation_nodes == {} and mrml_scene.scene.GetNumberOfNodes() == before
    prediction = PreparedJob("prediction", "Segmenting", tmp_path, tmp_path, [], {"image": volume},
                             output=tmp_path / "missing.seg.nrrd")
    prediction.detach()
    assert logic.import_prediction(prediction) == (None, [])


# -- 5, 9, 11. deleted volumes, unset paths, readiness -------------------------------------------------
def test_a_deleted_training_volume_is_skipped(mrml_scene):
    logic = ExtremeSegNodeLogic(mrml_scene.scene)
    image, truth = scenarios.synthetic_case()
    kept = mrml.add_volume_node(image, "Kept", scene=mrml_scene.scene)
    deleted = mrml.add_volume_node(image, "Deleted", scene=mrml_scene.scene)
    listed = [kept, deleted]
    mrml_scene.scene.RemoveNode(deleted)
    listed[1] = mrml_scene.scene.GetNodeByID(deleted.GetID())  # what the parameter node then reads: None
    assert listed[1] is None
    assert present_nodes(listed) == [kept]
    rows = logic.annotation_status(listed, "extreme points")
    assert [volume for volume, _, _ in rows] == [kept]
    ready, message = logic.training_readiness(listed, "extreme points", "extreme_points")
    assert not ready and message.startswith("Kept: ")
    with pytest.raises(InputError, match="volume 'Kept'"):
        logic.prepare_training(listed, "extreme points", "extreme_points")


def test_train_waits_until_every_volume_is_annotated(mrml_scene):
    logic = ExtremeSegNodeLogic(mrml_scene.scene)
    image, truth = scenarios.synthetic_case()
    volume = mrml.add_volume_node(image, "Case 1", scene=mrml_scene.scene)
    assert logic.training_readiness([], "extreme points", "extreme_points") == (False, "Check the training volumes.")
    assert not logic.training_readiness([volume], "surface points", "")[0]
    points = logic.annotation_node(volume, "extreme points")
    from ExtremeSegLib.simulate import simulate_extreme_points

    clicks = simulate_extreme_points(truth)
    for point in clicks[:5]:
        points.AddControlPoint(*point)
    ready, message = logic.training_readiness([volume], "extreme points", "extreme_points")
    assert not ready and "Case 1" in message
    points.AddControlPoint(*clicks[5])
    assert logic.training_readiness([volume], "extreme points", "extreme_points") == (
        True, "1 volume(s) annotated: ready to train.")


def test_unset_paths_are_not_the_current_folder(tmp_path, monkeypatch, mrml_scene):
    assert optional_path(None) is None and optional_path("") is None and optional_path(Path()) is None
    assert optional_path(" . ") is None and optional_path("~/x") == Path.home() / "x"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    folder = ExtremeSegNodeLogic._new_job_folder(Path(), "train")  # a cleared work folder field
    assert folder.parent == tmp_path / "home" / "ExtremeSeg" / "runs"
    assert not (tmp_path / "runs").exists()  # nothing in Slicer's current directory
    logic = ExtremeSegNodeLogic(mrml_scene.scene)
    volume = mrml.add_volume_node(scenarios.synthetic_case()[0], "Case 1", scene=mrml_scene.scene)
    with pytest.raises(InputError, match="choose the model file"):
        logic.prepare_prediction(Path(), volume)
    assert logic.model_summary(Path()) == "" and logic.model_summary(tmp_path / "none.pt").startswith("No model file")


def test_the_method_list_comes_from_the_catalog_and_says_what_inference_needs():
    from ExtremeSegLib.recipe_catalog import CATALOG

    listed = ExtremeSegNodeLogic.recipes()
    assert [(r.name, r.title, r.annotation, r.clicks_at_inference) for r in listed] == [
        (e.name, e.title, e.annotation, e.clicks_at_inference) for e in CATALOG]
    assert [r.name for r in ExtremeSegNodeLogic.recipes("scribbles")] == ["scribbles"]
    assert not ExtremeSegNodeLogic.recipes("scribbles")[0].clicks_at_inference


def test_a_model_file_is_read_once_per_version(tmp_path):
    logic = ExtremeSegNodeLogic()
    garbage = tmp_path / "model.pt"
    garbage.write_bytes(b"not a model")
    first = logic.model_info(garbage)
    assert not first.usable and first.summary.startswith("Not a usable ExtremeSeg model")
    assert logic.model_info(str(garbage)) is first  # every keystroke of the same path: no new read
    garbage.write_bytes(b"still not a model, but longer")
    assert logic.model_info(garbage) is not first  # a new file version is read again


# -- 11. sample data -----------------------------------------------------------------------------------
def test_the_sample_data_are_registered_with_their_checksums():
    root = sample_data.sample_data_root(REPO / "ExtremeSeg")
    assert root == REPO / "Resources" / "SampleData"
    sources = sample_data.sample_data_sources(root)
    assert len(sources) == len(sample_data.SAMPLE_CASES)
    # the keyword arguments of SampleData.SampleDataLogic.registerCustomSampleDataSource (Slicer 5.8 and later)
    accepted = {"category", "sampleName", "uris", "fileNames", "nodeNames", "customDownloader", "thumbnailFileName",
                "loadFileType", "loadFiles", "loadFileProperties", "checksums"}
    for source in sources:
        assert set(source) <= accepted
        lengths = {len(source[k]) for k in ("uris", "fileNames", "nodeNames", "loadFileType", "checksums")}
        assert len(lengths) == 1
        for uri, checksum in zip(source["uris"], source["checksums"]):
            path = Path(unquote(urlparse(uri).path))
            assert checksum == "SHA256:" + hashlib.sha256(path.read_bytes()).hexdigest(), path
    assert sample_data.sample_data_sources(REPO / "nowhere") == []


# -- 6, 7. the effect: masking and the model step ------------------------------------------------------
@pytest.fixture
def two_segments(mrml_scene):
    """A 12 x 10 x 8 ramp volume and a segmentation with one "Locked" segment in its lower half."""
    array = np.arange(12 * 10 * 8, dtype=np.float32).reshape(12, 10, 8)
    image = Volume(array, np.diag([1.0, 1.0, 2.0, 1.0]))
    volume = mrml.add_volume_node(image, "Ramp", scene=mrml_scene.scene)
    locked = np.zeros(image.shape, bool)
    locked[:6] = True
    node, ids = mrml.add_segments([Segment("Locked", locked, (0.5, 0.5, 0.5), None)], image, name="Scribbles",
                                  scene=mrml_scene.scene)
    node.SetAttribute("LockedSegmentID", ids[0])
    editor = mrml_scene.scene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
    return image, volume, node, editor, locked


def test_the_editable_area_follows_the_segment_editor_settings(two_segments):
    image, volume, node, editor, locked = two_segments
    assert editable_mask(node, None, volume, image).all()
    editor.SetMaskMode(slicer.vtkMRMLSegmentationNode.EditAllowedOutsideAllSegments)
    assert np.array_equal(editable_mask(node, editor, volume, image), ~locked)
    editor.SetMaskMode(slicer.vtkMRMLSegmentationNode.EditAllowedEverywhere)
    editor.SetSourceVolumeIntensityMask(True)
    editor.SetSourceVolumeIntensityMaskRange(0.0, 479.0)  # the first half of the ramp (i < 6)
    assert np.array_equal(editable_mask(node, editor, volume, image), image.array <= 479.0)


def test_apply_writes_only_inside_the_editable_area(two_segments):
    from ExtremeSegSlicerLib.scribble_preview import ScribblePreview

    image, volume, node, editor, locked = two_segments
    labels = np.zeros(image.shape, np.uint8)
    labels[3:9, 2:8, 2:6] = 1
    scribble = np.zeros(image.shape, bool)  # the scribble segments the classes came from
    preview = ScribblePreview(image.with_array(labels), [Segment("Background", scribble, (0, 0, 0), None),
                                                         Segment("Liver", scribble, (0.8, 0.2, 0.2), None)])
    editor.SetMaskMode(slicer.vtkMRMLSegmentationNode.EditAllowedOutsideAllSegments)
    ids = apply_preview(preview, node, editable_mask(node, editor, volume, image))
    added = mrml.segments_from_node(node, volume, ids)[0].mask
    assert np.array_equal(added, (labels == 1) & ~locked) and added.any()
    kept = mrml.segments_from_node(node, volume, [node.GetAttribute("LockedSegmentID")])[0].mask
    assert np.array_equal(kept, locked)  # the existing segment is untouched


def test_the_model_step_runs_in_a_child_process_and_becomes_the_prior(mrml_scene, tmp_path):
    """The effect's model path: ``extremeseg predict --probability`` in a child, read back as the prior."""
    torch = pytest.importorskip("torch")
    from ExtremeSegLib.training.data import InputSpec
    from ExtremeSegLib.training.model_file import save_model
    from ExtremeSegLib.training.networks import build_network, plan_network

    image, _ = scenarios.synthetic_case()
    volume = mrml.add_volume_node(image, "Case 1", scene=mrml_scene.scene)
    kernels, strides = plan_network(tuple(image.spacing), (16, 16, 16), min_feature_size=2, max_levels=3)
    params = dict(in_channels=1, out_channels=3, kernels=kernels, strides=strides, filters=[4, 8, 16])
    torch.manual_seed(0)
    save_model(tmp_path / "model.pt", build_network(**params), {
        "recipe": "scribbles", "network": params, "patch_size": [16, 16, 16],
        "inputs": InputSpec(cues=(), crop_to_points=False).resolved("mri", tuple(image.spacing)).to_dict(),
        "classes": [{"name": "Big", "label_values": [1]}, {"name": "Small", "label_values": [2]}]})
    logic = ExtremeSegNodeLogic(mrml_scene.scene)
    info = logic.model_info(tmp_path / "model.pt")
    assert info.usable and not info.needs_clicks and "fully automatic" in info.summary
    job = logic.prepare_prediction(tmp_path / "model.pt", volume, work_folder=tmp_path, device="cpu",
                                   probabilities=True)
    state = logic.start_prediction(job).wait(timeout=120)
    assert state.status == "done", state.error
    prior = prior_from_files(job.probabilities, image)
    assert prior.shape == (3,) + image.shape
    assert np.allclose(prior.sum(axis=0), 1.0, atol=1e-4) and prior.min() >= 0


def test_a_prior_from_files_must_be_on_the_volume_grid(tmp_path):
    from ExtremeSegLib.io.volumes import write_volume

    image = Volume(np.zeros((6, 5, 4), np.float32), np.eye(4))
    write_volume(image.with_array(np.full(image.shape, 0.25, np.float32)), tmp_path / "p.nrrd")
    prior = prior_from_files([tmp_path / "p.nrrd"], image)
    assert np.allclose(prior[0], 0.75) and np.allclose(prior[1], 0.25)
    shifted = Volume(image.array, np.diag([2.0, 1.0, 1.0, 1.0]))
    with pytest.raises(InputError, match="not on the grid"):
        prior_from_files([tmp_path / "p.nrrd"], shifted)



def test_a_new_catalog_row_is_offered_and_decides_whether_its_models_need_clicks(monkeypatch):
    """Rows still to come (InExtremIS: extreme points, Weak-Net: surface points; both fully automatic) need no
    panel change: they are listed for their annotation and their models segment without clicks."""
    from ExtremeSegSlicerLib.logic import model_needs_clicks

    from ExtremeSegLib import recipe_catalog

    rows = (recipe_catalog.RecipeEntry("auto_from_clicks", "Automatic, trained from clicks", "extreme points", False),
            recipe_catalog.RecipeEntry("auto_from_surface", "Automatic, trained from surface points", "surface points",
                                       False))
    monkeypatch.setattr(recipe_catalog, "CATALOG", recipe_catalog.CATALOG + rows)
    assert "auto_from_clicks" in [r.name for r in ExtremeSegNodeLogic.recipes("extreme points")]
    assert [r.name for r in ExtremeSegNodeLogic.recipes("surface points")] == ["auto_from_surface"]
    from ExtremeSegLib.training.data import InputSpec

    automatic_inputs = InputSpec(cues=(), crop_to_points=False).resolved("mri", (1.0, 1.0, 1.0)).to_dict()
    click_inputs = InputSpec().resolved("mri", (1.0, 1.0, 1.0)).to_dict()
    assert not model_needs_clicks({"recipe": "auto_from_clicks", "inputs": automatic_inputs})
    assert model_needs_clicks({"recipe": "extreme_points", "inputs": automatic_inputs})  # its row says clicks
    # a recipe without a row (a plugin's) is judged by the model's own inputs
    assert not model_needs_clicks({"recipe": "plugin", "inputs": automatic_inputs})
    assert model_needs_clicks({"recipe": "plugin", "inputs": click_inputs})
