"""The ExtremeSeg module's logic on MRML nodes, without a GUI (the panel and the console both call it).

- Annotations: each volume gets its own point list (extreme or surface points) or scribble segmentation,
  found again through a node reference to the volume; :meth:`ExtremeSegNodeLogic.placement_guide` says what
  is placed, what is missing and what is wrong.
- Training: :meth:`~ExtremeSegNodeLogic.prepare_training` exports the volumes and annotations to files and
  writes the job's JSON config (:class:`ExtremeSegLib.recipes.JobConfig`); :meth:`~ExtremeSegNodeLogic.start_training`
  runs ``extremeseg train --config ... --progress-jsonl`` in a child process (the same command line as outside
  Slicer); :meth:`~ExtremeSegNodeLogic.import_training_results` loads the segmentations as NEW segmentation
  nodes and returns the model file.
- Prediction: the same for ``extremeseg predict`` with a model file on one volume; results are added as new
  segments (an existing segmentation's segments are never modified).
- Console batch: :meth:`~ExtremeSegNodeLogic.segment_volumes` and :meth:`~ExtremeSegNodeLogic.segment_with_model`
  run a whole job and wait for it.

Work folder layout (nothing is overwritten; every job gets a new folder)::

    <work folder>/runs/<YYYYmmdd-HHMMSS>-train/   job.json, data/ (exported volumes + annotations), output/ (the run)
    <work folder>/runs/<YYYYmmdd-HHMMSS>-predict/ image.nrrd, points.mrk.json, segmentation.seg.nrrd

Imports only slicer's MRML classes (through ``ExtremeSegLib.mrml``) and the core; the method list comes from
the static ``ExtremeSegLib.recipe_catalog``; torch and the recipes are imported only when a job is prepared or a
model file is read, and ``ExtremeSegLib.pseudolabel`` (scikit-image) only where it is used: they may not be
installed yet when Slicer starts and loads this module.
"""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ExtremeSegLib import mrml, recipe_catalog
from ExtremeSegLib.child_process import ChildRun, RunState, cli_command
from ExtremeSegLib.errors import InputError

from .placement import EXTREME_POINTS_REQUIRED, PlacementGuide, extreme_points_guide, surface_points_guide

#: what a user draws on each volume (the panel's choices)
ANNOTATIONS = recipe_catalog.ANNOTATIONS
#: where training runs (the engine's choices; ``auto`` = CUDA when present)
DEVICES = ("auto", "cpu", "cuda")
#: node reference from an annotation node to its volume, and the attribute naming the annotation kind
VOLUME_REFERENCE_ROLE = "ExtremeSeg.Volume"
ANNOTATION_ATTRIBUTE = "ExtremeSeg.Annotation"
#: a scribble segment is the background when its name contains this word (as the scribbles recipe reads it;
#: ``ExtremeSegLib.pseudolabel.scribbles.BACKGROUND_WORD``, not imported here: it needs scikit-image)
BACKGROUND_WORD = "background"
_POINT_COLORS = {"extreme points": (0.9, 0.15, 0.15), "surface points": (0.95, 0.8, 0.1)}


@dataclass(frozen=True)
class RecipeInfo:
    """A training recipe as the panel lists it (a row of ``ExtremeSegLib.recipe_catalog``)."""

    name: str
    title: str
    description: str
    annotation: str
    clicks_at_inference: bool  # False: the trained model segments new volumes without clicks


@dataclass
class PreparedJob:
    """A training or prediction job exported to its folder: its files, its command line, and the volume node
    each case came from (held, so that a node that later reuses the same ID is never taken for it)."""

    kind: str  # "training" or "prediction"
    title: str
    folder: Path  # the job's own folder under <work folder>/runs
    run_dir: Path  # where the child looks for its CANCEL file
    command: list  # the extremeseg command line (subcommand and arguments), as run outside Slicer
    volumes: dict = field(default_factory=dict)  # case name -> the volume node it was exported from
    config_path: Path | None = None
    output: Path | None = None  # prediction: the .seg.nrrd to read back
    probabilities: list = field(default_factory=list)  # prediction: per-class probability volumes, when asked for
    detached: bool = False  # its scene was closed: results stay in files, nothing is added to a scene

    @property
    def cases(self) -> dict:
        """Case name -> volume node ID at the time of export."""
        return {name: node.GetID() for name, node in self.volumes.items()}

    def volume_node(self, case: str, scene):
        """The volume node of ``case`` if it is still in ``scene`` (the very node, not one that reuses its ID)."""
        node = self.volumes.get(case)
        if self.detached or node is None or node.GetScene() is not scene:
            return None
        return node if scene.GetNodeByID(node.GetID()) is node else None

    def detach(self) -> None:
        """Let the job finish into its files only (its scene is closing); the volume nodes are let go."""
        self.detached = True
        self.volumes = {}


@dataclass(frozen=True)
class ModelInfo:
    """What the panel shows about a model file: a one-line summary and whether it needs clicks."""

    summary: str
    usable: bool
    needs_clicks: bool = False
    recipe: str = ""


@dataclass
class TrainingResults:
    model_path: Path
    segmentation_nodes: dict  # volume node ID -> new segmentation node
    outputs: dict  # everything the run wrote (see ExtremeSegLib.recipes.loop)


def optional_path(value) -> Path | None:
    """``value`` as a path, or ``None`` when unset: ``None``, ``""`` and ``"."`` (what an empty ``Path()`` shows)."""
    if value is None:
        return None
    text = str(value).strip()
    return None if text in ("", ".") else Path(text).expanduser()


def model_needs_clicks(description: dict) -> bool:
    """Whether a model (its file's description) segments a new volume only with the object's clicks.

    The recipe's catalog row says so for the models it trains (``clicks_at_inference``); a recipe without a
    row (e.g. registered by a plugin) is judged by the model's own inputs.
    """
    try:
        return recipe_catalog.recipe_entry(str(description.get("recipe"))).clicks_at_inference
    except KeyError:
        from ExtremeSegLib.training.data import InputSpec

        return InputSpec.from_dict(description["inputs"]).needs_points


def present_nodes(nodes) -> list:
    """``nodes`` without the ``None`` entries a deleted node leaves in a parameter-node list."""
    return [node for node in (nodes or []) if node is not None]


def safe_name(text: str) -> str:
    """A file-name-safe version of a node name (letters, digits, '-', '_', '.')."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")
    return cleaned or "volume"


class ExtremeSegNodeLogic:
    """Everything the module does, on MRML nodes of ``scene`` (default: ``slicer.mrmlScene``).

    ``python``: the interpreter for the child processes (default :meth:`default_python`, i.e. this one;
    inside Slicer the module passes PythonSlicer).
    """

    def __init__(self, scene=None, python=None):
        self._scene = scene
        self._python = python
        self._model_infos = {}  # (path, size, mtime) -> ModelInfo: a model file is read once, not per keystroke

    @property
    def scene(self):
        if self._scene is not None:
            return self._scene
        import slicer

        return slicer.mrmlScene

    def default_python(self) -> str:
        return sys.executable

    @property
    def python(self) -> str:
        return self._python or self.default_python()

    @staticmethod
    def default_work_folder() -> Path:
        """Where jobs go unless the user picks a folder: models belong somewhere lasting, not in a temp folder."""
        return Path.home() / "ExtremeSeg"

    # -- recipes ----------------------------------------------------------------------------------
    @staticmethod
    def recipes(annotation: str | None = None) -> list:
        """The recipes a user can pick (optionally those for one annotation), from the static catalog: listing
        them imports neither torch nor MONAI, so the panel shows them before those are installed."""
        return [RecipeInfo(e.name, e.title, e.summary, e.annotation, e.clicks_at_inference)
                for e in recipe_catalog.recipes_for(annotation)]

    # -- annotations -------------------------------------------------------------------------------
    def annotation_node(self, volume_node, annotation: str, create: bool = True):
        """The point list or scribble segmentation holding ``annotation`` for ``volume_node``.

        Found through its reference to the volume; created (empty, named "<volume> <annotation>") when
        missing and ``create``. Scribble segmentations start with a "Background" and a "Structure" segment.
        """
        if annotation not in ANNOTATIONS:
            raise InputError(f"unknown annotation {annotation!r}; choose one of {', '.join(ANNOTATIONS)}")
        node_class = "vtkMRMLSegmentationNode" if annotation == "scribbles" else "vtkMRMLMarkupsFiducialNode"
        for node in self._nodes(node_class):
            if (node.GetAttribute(ANNOTATION_ATTRIBUTE) == annotation
                    and node.GetNodeReferenceID(VOLUME_REFERENCE_ROLE) == volume_node.GetID()):
                return node
        if not create:
            return None
        node = self.scene.AddNewNodeByClass(node_class, f"{volume_node.GetName()} {annotation}")
        node.CreateDefaultDisplayNodes()
        node.SetAttribute(ANNOTATION_ATTRIBUTE, annotation)
        node.SetNodeReferenceID(VOLUME_REFERENCE_ROLE, volume_node.GetID())
        if annotation == "scribbles":
            node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
            node.GetSegmentation().AddEmptySegment("", "Background", [0.55, 0.55, 0.6])
            node.GetSegmentation().AddEmptySegment("", "Structure", [0.95, 0.55, 0.1])
        else:
            node.GetDisplayNode().SetSelectedColor(*_POINT_COLORS[annotation])
            if annotation == "extreme points":  # placement stops by itself after the 6th click
                node.SetMaximumNumberOfControlPoints(EXTREME_POINTS_REQUIRED)
        return node

    def set_annotation_node(self, volume_node, annotation: str, node) -> None:
        """Use an existing point list or segmentation as ``volume_node``'s annotation (e.g. one loaded from a file)."""
        previous = self.annotation_node(volume_node, annotation, create=False)
        if previous is not None and previous is not node:
            previous.RemoveNodeReferenceIDs(VOLUME_REFERENCE_ROLE)
        node.SetAttribute(ANNOTATION_ATTRIBUTE, annotation)
        node.SetNodeReferenceID(VOLUME_REFERENCE_ROLE, volume_node.GetID())

    def _nodes(self, node_class: str) -> list:
        nodes = self.scene.GetNodesByClass(node_class)
        return [nodes.GetItemAsObject(n) for n in range(nodes.GetNumberOfItems())]

    @staticmethod
    def placed_points(markups_node) -> np.ndarray:
        """Placed points (world RAS mm, (N, 3)); empty when none is placed yet."""
        if markups_node is None or not any(
                markups_node.GetNthControlPointPositionStatus(n) == markups_node.PositionDefined
                for n in range(markups_node.GetNumberOfControlPoints())):
            return np.zeros((0, 3))
        return mrml.points_from_markups_node(markups_node)[0]

    def placement_guide(self, volume_node, annotation: str, node=None) -> PlacementGuide:
        """What is placed on ``volume_node``, what is missing, what is wrong (see :mod:`.placement`)."""
        node = node or self.annotation_node(volume_node, annotation, create=False)
        try:
            geometry = mrml.geometry_from_node(volume_node)
        except InputError as err:
            return PlacementGuide(0, 0, message=str(err), error=True)
        if annotation == "scribbles":
            return self._scribble_guide(node, volume_node)
        points = self.placed_points(node)
        guide = extreme_points_guide if annotation == "extreme points" else surface_points_guide
        return guide(points, geometry)

    def _scribble_guide(self, node, volume_node) -> PlacementGuide:
        if node is None or node.GetSegmentation().GetNumberOfSegments() == 0:
            return PlacementGuide(0, 2, message=(
                "Paint scribbles: one segment named \"Background\" with strokes outside the structures, "
                "one segment per structure with strokes inside."))
        segments = mrml.segments_from_node(node, volume_node)
        painted = [s for s in segments if s.mask.any()]
        background = [s for s in segments if BACKGROUND_WORD in s.name.lower()]
        count = len(painted)
        if not background:
            return PlacementGuide(count, 2, error=True, message=(
                "Name the segment that marks the background \"Background\" (no segment has that name)."))
        if not background[0].mask.any():
            return PlacementGuide(count, 2, message="Paint some background strokes (segment "
                                                    f"{background[0].name!r} is empty).")
        structures = [s for s in painted if s is not background[0]]
        if not structures:
            return PlacementGuide(count, 2, message="Paint strokes inside at least one structure segment.")
        empty = [s.name for s in segments if not s.mask.any() and s is not background[0]]
        note = f" Empty segments are ignored: {', '.join(empty)}." if empty else ""
        return PlacementGuide(count, 2, complete=True, message=(
            f"Background and {len(structures)} structure(s) painted: "
            f"{', '.join(s.name for s in structures)}.{note}"))

    def annotation_status(self, volume_nodes, annotation: str) -> list:
        """``(volume node, annotation node or None, guide)`` per volume (deleted ones skipped): the panel's table."""
        rows = []
        for volume in present_nodes(volume_nodes):
            node = self.annotation_node(volume, annotation, create=False)
            rows.append((volume, node, self.placement_guide(volume, annotation, node)))
        return rows

    def training_readiness(self, volume_nodes, annotation: str, recipe: str) -> tuple:
        """``(ready, message)``: whether Train can start, and otherwise the first thing to do."""
        volumes = present_nodes(volume_nodes)
        if not volumes:
            return False, "Check the training volumes."
        if not recipe:
            return False, f"Choose a method that trains from {annotation}."
        for volume, _node, guide in self.annotation_status(volumes, annotation):
            if not guide.complete:
                return False, f"{volume.GetName()}: {guide.message}"
        return True, f"{len(volumes)} volume(s) annotated: ready to train."

    # -- jobs ---------------------------------------------------------------------------------------
    @staticmethod
    def _new_job_folder(work_folder, kind: str) -> Path:
        runs = (optional_path(work_folder) or ExtremeSegNodeLogic.default_work_folder()) / "runs"
        runs.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for n in range(1, 1000):
            folder = runs / (f"{stamp}-{kind}" if n == 1 else f"{stamp}-{kind}-{n}")
            try:
                folder.mkdir()
                return folder
            except FileExistsError:
                continue
        raise InputError(f"cannot create a new job folder in {runs}; clean it up")

    def _export_volume(self, volume_node, path: Path):
        from ExtremeSegLib.io.volumes import write_volume

        volume = mrml.volume_from_node(volume_node)
        write_volume(volume, path)
        return volume

    def prepare_training(self, volume_nodes, annotation: str, recipe: str, work_folder=None, annotation_nodes=None,
                         structure: str = "Structure", epochs: int | None = None, rounds: int | None = None,
                         device: str = "auto", settings: dict | None = None) -> PreparedJob:
        """Export the volumes and their annotations and write the job config; nothing runs yet.

        ``annotation_nodes``: one point list / segmentation per volume (default: each volume's own, see
        :meth:`annotation_node`). ``structure``: the class name for point annotations (scribbles take their
        segment names). ``epochs`` (per round) and ``rounds``: None keeps the recipe's defaults.
        ``settings``: more config sections merged in (e.g. ``{"training": {"batch_size": 1}}``).
        :class:`InputError` naming the first volume whose annotation is incomplete or wrong.
        """
        from ExtremeSegLib.io.markups import write_points
        from ExtremeSegLib.recipes import JobConfig

        volume_nodes = present_nodes(volume_nodes)
        if not volume_nodes:
            raise InputError("choose at least one training volume")
        if annotation not in ANNOTATIONS:
            raise InputError(f"unknown annotation {annotation!r}; choose one of {', '.join(ANNOTATIONS)}")
        if annotation_nodes is None:
            annotation_nodes = [self.annotation_node(v, annotation, create=False) for v in volume_nodes]
        annotation_nodes = list(annotation_nodes)
        if len(annotation_nodes) != len(volume_nodes):
            raise InputError(f"{len(annotation_nodes)} annotation nodes given for {len(volume_nodes)} volumes")
        for volume, node in zip(volume_nodes, annotation_nodes):
            guide = self.placement_guide(volume, annotation, node)
            if node is None or not guide.complete:
                raise InputError(f"volume {volume.GetName()!r}: {guide.message}")

        folder = self._new_job_folder(work_folder, "train")
        data = folder / "data"
        data.mkdir()
        cases, case_volumes, taken = [], {}, set()
        class_names = ([structure] if annotation != "scribbles"
                       else self._scribble_class_names(annotation_nodes, volume_nodes))
        for volume_node, node in zip(volume_nodes, annotation_nodes):
            name = safe_name(volume_node.GetName())
            base, n = name, 2
            while name in taken:
                name, n = f"{base}_{n}", n + 1
            taken.add(name)
            image_path = data / f"{name}.nrrd"
            volume = self._export_volume(volume_node, image_path)
            case = {"name": name, "image": str(image_path)}
            if annotation == "scribbles":
                case["scribble"] = str(self._export_scribbles(node, volume, data / f"{name}_scribbles.seg.nrrd"))
            else:
                case["points"] = str(write_points(data / f"{name}.mrk.json", self.placed_points(node),
                                                  name=f"{name} {annotation}"))
            cases.append(case)
            case_volumes[name] = volume_node

        config = {"recipe": recipe, "output": str(folder / "output"), "cases": cases, "device": device,
                  "classes": [{"name": c, "label_values": [n]} for n, c in enumerate(class_names, start=1)]}
        for section, values in (settings or {}).items():
            config[section] = {**config.get(section, {}), **values} if isinstance(values, dict) else values
        if epochs:
            config.setdefault("training", {})["epochs"] = int(epochs)
        if rounds:
            config.setdefault("rounds", {})["max_rounds"] = int(rounds)
        job_config = JobConfig.from_dict(config)  # checked now, with a message, rather than in the child
        config_path = job_config.to_json(folder / "job.json")
        return PreparedJob("training", f"Training ({recipe})", folder, folder / "output",
                   ["train", "--config", str(config_path), "--progress-jsonl"], case_volumes, config_path)

    @staticmethod
    def _scribble_class_names(segmentation_nodes, volume_nodes) -> list:
        """Structure segment names over all volumes, in order of first appearance (the classes)."""
        names = []
        for node, volume in zip(segmentation_nodes, volume_nodes):
            for segment in mrml.segments_from_node(node, volume):
                if BACKGROUND_WORD not in segment.name.lower() and segment.mask.any() and segment.name not in names:
                    names.append(segment.name)
        return names

    @staticmethod
    def _export_scribbles(node, volume, path: Path) -> Path:
        """The painted scribble segments as a ``.seg.nrrd``: the scribbles recipe maps segments to classes by
        name (and "background"), exactly as the effect's preview does."""
        from ExtremeSegLib.io.segmentations import write_segmentation

        painted = [s for s in mrml.segments_from_node(node, volume) if s.mask.any()]
        return write_segmentation(path, volume, painted)

    def start_training(self, job: PreparedJob, python=None, resume: bool = False, grace_s: float = 10.0) -> ChildRun:
        """Start ``extremeseg train --config <job.json> --progress-jsonl [--resume]`` in a child process."""
        argv = cli_command(*job.command, *(["--resume"] if resume else []), python=python or self.python)
        return ChildRun(argv, job.run_dir, grace_s=grace_s).start()

    def import_training_results(self, job: PreparedJob, state: RunState) -> TrainingResults:
        """Load the run's segmentations as new segmentation nodes ("<volume> ExtremeSeg"), one per volume.

        A detached job (its scene was closed) adds nothing: the files are in its folder. A segmentation
        whose volume is no longer in the scene is added under the case name, linked to no volume.
        """
        from ExtremeSegLib.io.segmentations import read_segmentation

        outputs = state.outputs
        if not outputs.get("model"):
            raise InputError(f"the run in {job.run_dir} reported no model file; see its log")
        nodes = {}
        for path in ([] if job.detached else outputs.get("segmentations", [])):
            case = Path(path).name[: -len(".seg.nrrd")]
            volume_node = job.volume_node(case, self.scene)
            geometry, segments = read_segmentation(path)
            name = f"{volume_node.GetName() if volume_node else case} ExtremeSeg"
            node, _ = mrml.add_segments(segments, geometry, name=name, scene=self.scene)
            if volume_node is not None:
                node.SetNodeReferenceID(VOLUME_REFERENCE_ROLE, volume_node.GetID())
                nodes[volume_node.GetID()] = node
        return TrainingResults(Path(outputs["model"]), nodes, outputs)

    def model_info(self, model_path) -> ModelInfo:
        """What a model file is (recipe, classes, whether it needs clicks), or what is wrong with it; never raises.

        Read once per file version (path, size, modification time). Whether it needs clicks:
        :func:`model_needs_clicks`.
        """
        path = optional_path(model_path)
        if path is None:
            return ModelInfo("", False)
        try:
            stat = path.stat()
        except OSError:
            return ModelInfo(f"No model file at {path}.", False)
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        if key not in self._model_infos:
            self._model_infos[key] = self._read_model_info(path)
        return self._model_infos[key]

    @staticmethod
    def _read_model_info(path: Path) -> ModelInfo:
        try:
            from ExtremeSegLib.training.model_file import read_description
        except Exception as err:  # noqa: BLE001  (a half-installed torch raises more than ImportError)
            return ModelInfo(f"Install ExtremeSeg's dependencies to read model files ({err}).", False)
        try:
            description = read_description(path)
            needs_points = model_needs_clicks(description)
            recipe = str(description["recipe"])
            classes = ", ".join(c["name"] for c in description.get("classes", []))
        except Exception as err:  # noqa: BLE001  (whatever the file holds, the panel shows a sentence)
            return ModelInfo(f"Not a usable ExtremeSeg model: {err}", False)
        try:
            title = recipe_catalog.recipe_entry(recipe).title
        except KeyError:
            title = recipe
        clicks = "needs the object's 6 extreme points" if needs_points else "fully automatic (no clicks needed)"
        return ModelInfo(f"{title} model; classes: {classes}; {clicks}.", True, needs_points, recipe)

    def model_summary(self, model_path) -> str:
        """One line about a model file (see :meth:`model_info`)."""
        return self.model_info(model_path).summary

    def prepare_prediction(self, model_path, volume_node, points_node=None, work_folder=None,
                           device: str = "auto", postprocess: bool = True, probabilities: bool = False) -> PreparedJob:
        """Export the volume (and clicks) for ``extremeseg predict``; :class:`InputError` for a click-based
        model without clicks. ``postprocess=False``: the network's label map without the model's cleaning;
        ``probabilities``: also write each class's probability (``job.probabilities``, the effect's prior)."""
        from ExtremeSegLib.io.markups import write_points
        from ExtremeSegLib.training.inference import probability_paths
        from ExtremeSegLib.training.model_file import read_description

        if volume_node is None:
            raise InputError("choose the volume to segment")
        model_path = optional_path(model_path)
        if model_path is None:
            raise InputError("choose the model file to segment with")
        description = read_description(model_path)
        if model_needs_clicks(description):
            guide = self.placement_guide(volume_node, "extreme points", points_node)
            if points_node is None or not guide.complete:
                raise InputError(f"this model needs the object's 6 extreme points on {volume_node.GetName()!r}: "
                                 f"{guide.message}")
        else:
            points_node = None  # a fully automatic model takes no clicks
        folder = self._new_job_folder(work_folder, "predict")
        image = folder / "image.nrrd"
        self._export_volume(volume_node, image)
        out = folder / "segmentation.seg.nrrd"
        args = ["predict", "--model", str(model_path), "--image", str(image), "--out", str(out), "--device", device]
        if not postprocess:
            args.append("--no-postprocess")
        probability_files = []
        if probabilities:
            args += ["--probability", str(folder / "probability.nrrd")]
            probability_files = probability_paths(folder / "probability.nrrd",
                                                  [c["name"] for c in description.get("classes", [])])
        if points_node is not None:
            points = write_points(folder / "points.mrk.json", self.placed_points(points_node), name="points")
            args += ["--points", str(points)]
        return PreparedJob("prediction", f"Segmenting {volume_node.GetName()}", folder, folder, args,
                           {"image": volume_node}, output=out, probabilities=probability_files)

    def start_prediction(self, job: PreparedJob, python=None) -> ChildRun:
        """Start ``extremeseg predict ...`` in a child process (cancelled by the CANCEL file in its folder)."""
        return ChildRun(cli_command(*job.command, python=python or self.python), job.run_dir,
                        resumable=False).start()

    def import_prediction(self, job: PreparedJob, segmentation_node=None):
        """Add the predicted segments to ``segmentation_node`` (new segments) or to a new node; ``(node, ids)``.

        ``(None, [])`` for a detached job (its scene was closed: the result stays in ``job.output``).
        A target segmentation that is no longer in the scene is replaced by a new node.
        """
        from ExtremeSegLib.io.segmentations import read_segmentation

        if job.detached:
            return None, []
        if segmentation_node is not None and segmentation_node.GetScene() is not self.scene:
            segmentation_node = None
        geometry, segments = read_segmentation(job.output)
        volume_node = job.volume_node("image", self.scene)
        name = f"{volume_node.GetName()} ExtremeSeg" if volume_node else "ExtremeSeg"
        node, ids = mrml.add_segments(segments, geometry, segmentation_node, name=name, scene=self.scene)
        return node, ids

    # -- console batch --------------------------------------------------------------------------------
    @staticmethod
    def _wait(run: ChildRun, job: PreparedJob, callback) -> RunState:
        try:
            state = run.wait(callback=callback)
        except KeyboardInterrupt:  # Ctrl-C in a console: stop the child too, keeping its last checkpoint
            run.cancel()
            run.wait(timeout=run.grace_s + 5)
            raise
        if state.status == "failed":
            raise InputError(f"{job.title} failed: {state.error}")
        if state.status == "cancelled":
            raise InputError(f"{job.title} was cancelled; resume it with start_training(job, resume=True)")
        return state

    def segment_volumes(self, volume_nodes, annotation_nodes=None, annotation: str = "extreme points",
                        recipe: str | None = None, work_folder=None, callback=None, **job_settings) -> TrainingResults:
        """Train on ``volume_nodes`` with their annotations and load the results; blocks until done.

        ``annotation_nodes``: one point list (or scribble segmentation) per volume; default: each volume's
        own (:meth:`annotation_node`). ``recipe``: default the first one for ``annotation``.
        ``callback(event)`` gets every progress event (e.g. ``print``). ``job_settings``: ``structure``,
        ``epochs``, ``rounds``, ``device``, ``settings`` as in :meth:`prepare_training`.
        Returns the model file and a new segmentation node per volume.
        """
        if recipe is None:
            choices = self.recipes(annotation)
            if not choices:
                raise InputError(f"no training recipe for {annotation} is installed")
            recipe = choices[0].name
        job = self.prepare_training(volume_nodes, annotation, recipe, work_folder, annotation_nodes, **job_settings)
        state = self._wait(self.start_training(job), job, callback)
        return self.import_training_results(job, state)

    def segment_with_model(self, model_path, volume_nodes, points_nodes=None, segmentation_nodes=None,
                           work_folder=None, device: str = "auto", callback=None, postprocess: bool = True) -> list:
        """Segment each volume with a trained model; returns one ``(segmentation node, new segment IDs)`` each.

        ``points_nodes``: the clicks per volume for click-based models (None entries otherwise);
        ``segmentation_nodes``: where to add the segments (None: a new node per volume);
        ``postprocess=False``: the network's label map without the model file's cleaning.
        """
        volume_nodes = list(volume_nodes)
        points_nodes = list(points_nodes) if points_nodes is not None else [None] * len(volume_nodes)
        segmentation_nodes = (list(segmentation_nodes) if segmentation_nodes is not None
                              else [None] * len(volume_nodes))
        results = []
        for volume, points, target in zip(volume_nodes, points_nodes, segmentation_nodes):
            job = self.prepare_prediction(model_path, volume, points, work_folder, device, postprocess)
            self._wait(self.start_prediction(job), job, callback)
            results.append(self.import_prediction(job, target))
        return results
