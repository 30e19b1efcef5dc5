"""Bad input and faults as a user meets them: real files, the real command line (its ``main``, stdout and stderr
captured; ``python -m ExtremeSegLib.cli`` in a subprocess where a fresh process is the point); each failure must
be one line on stderr with exit status 2 (never a traceback), and leave no output behind.

The kinds tried and their outcomes are tabled in docs/error_handling.md. A full disk and a read-only folder are
real: a tiny (or read-only) tmpfs mounted for the test when it runs as root and may mount (else skipped); the
ENOSPC path through the writers is also provoked without root by a writer that fails with ENOSPC half-way.
"""

import contextlib
import errno
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import REPO, make_ellipsoid

from ExtremeSegLib.errors import InputError
from ExtremeSegLib.io import write_points, write_volume
from ExtremeSegLib.io.volumes import write_atomically
from ExtremeSegLib.simulate import simulate_extreme_points


def cli(*args, cwd=None, fresh=False) -> subprocess.CompletedProcess:
    """``extremeseg ARGS`` as the user runs it: the command line's ``main`` in this interpreter (a fresh one costs
    seconds of imports per call), or with ``fresh=True`` ``python -m ExtremeSegLib.cli`` in a subprocess."""
    args = [str(a) for a in args]
    if fresh:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
        return subprocess.run([sys.executable, "-m", "ExtremeSegLib.cli", *args], capture_output=True,
                              text=True, cwd=cwd, env=env, timeout=300)
    from ExtremeSegLib.cli import main

    out, err, before = io.StringIO(), io.StringIO(), os.getcwd()
    try:
        os.chdir(cwd or before)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(args)
            except SystemExit as exit_:  # argparse refuses an option this way
                code = exit_.code
    finally:
        os.chdir(before)
    return subprocess.CompletedProcess(["extremeseg", *args], code, out.getvalue(), err.getvalue())


def refused(result, *phrases) -> str:
    """The one-line error of a refused command (exit 2, no traceback), checked for ``phrases``."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if ": error:" in line]
    assert len(errors) == 1, result.stderr
    for phrase in phrases:
        assert phrase in errors[0], errors[0]
    return errors[0]


@pytest.fixture
def case(tmp_path):
    """An image and its 6 extreme points (files)."""
    image, label = make_ellipsoid(shape=(40, 36, 30))
    paths = {"image": write_volume(image, tmp_path / "image.nii.gz"),
             "label": write_volume(label, tmp_path / "label.nii.gz"),
             "points": write_points(tmp_path / "points.mrk.json", simulate_extreme_points(label, seed=0))}
    return paths


def _mount(folder: Path, options: str) -> Path:
    folder.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    return folder


@pytest.fixture
def tiny_disk(tmp_path):
    """A real 12 KiB file system: the segmentation (1 KiB) fits on it, the probability map (16 KiB) does not."""
    yield _mount(tmp_path / "disk", "size=12k")
    subprocess.run(["umount", str(tmp_path / "disk")])


@pytest.fixture
def read_only_folder(tmp_path):
    """A real read-only folder (a read-only tmpfs: root may write into any chmod-ed folder)."""
    yield _mount(tmp_path / "ro", "ro,size=16k")
    subprocess.run(["umount", str(tmp_path / "ro")])


# -- writing: full disk, read-only folder, output over an input --------------------------------------------------

def test_full_disk_is_a_sentence_and_the_written_segmentation_is_removed(case, tiny_disk):
    out = tiny_disk / "object.seg.nrrd"
    result = cli("pseudolabel", "--image", case["image"], "--points", case["points"], "--out", out,
                 "--probability", tiny_disk / "p.nii.gz")
    refused(result, "cannot write", "p.nii.gz", "the disk is full")
    assert "wrote segment" in result.stdout  # the segmentation was written, then removed with the failed command
    assert list(tiny_disk.iterdir()) == []


def test_writer_failing_with_enospc_half_way_is_an_input_error_and_leaves_nothing(tmp_path):
    def half_then_full(tmp):
        Path(tmp).write_bytes(b"half a file")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))

    with pytest.raises(InputError, match=r"cannot write .*out\.nii\.gz: the disk is full; free some space"):
        write_atomically(tmp_path / "out.nii.gz", False, half_then_full)
    assert list(tmp_path.iterdir()) == []


def test_failed_command_removes_what_it_wrote_and_the_folders_it_made(tmp_path, ellipsoid):
    image, _ = ellipsoid
    from ExtremeSegLib.io.outputs import make_folder, tracking_files

    with pytest.raises(InputError, match="the disk is full"), tracking_files():
        folder = make_folder(tmp_path / "new" / "deeper")
        write_volume(image, folder / "first.nii.gz")
        write_atomically(folder / "second.nii.gz", False,
                         lambda tmp: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device")))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["pseudolabel", "predict", "train"])
def test_read_only_output_folder(case, read_only_folder, command, trained_model, tmp_path):
    if command == "pseudolabel":
        result = cli("pseudolabel", "--image", case["image"], "--points", case["points"],
                     "--out", read_only_folder / "o.seg.nrrd")
    elif command == "predict":
        result = cli("predict", "--model", trained_model, "--image", case["image"], "--points", case["points"],
                     "--out", read_only_folder / "o.seg.nrrd", "--device", "cpu")
    else:
        result = cli("train", "--config", write_job(tmp_path, output=str(read_only_folder / "o.seg.nrrd")))
    refused(result, "cannot ", "o.seg.nrrd", "read-only")


def test_output_that_is_an_input_is_refused_whatever_the_flags(case):
    before = case["image"].read_bytes()
    result = cli("pseudolabel", "--image", case["image"], "--points", case["points"],  # as run: a new process
                 "--out", case["image"].parent / "o.seg.nrrd", "--probability", case["image"], "--overwrite",
                 fresh=True)
    refused(result, "image.nii.gz is one of this command's inputs")
    assert case["image"].read_bytes() == before
    assert not (case["image"].parent / "o.seg.nrrd").exists()  # written before the refusal, removed with it


# -- numbers where options and config sections are read ------------------------------------------------------------

@pytest.mark.parametrize("args, phrase", [
    (["pseudolabel", "--beta", "nan"], "argument --beta: must be a finite number > 0, got nan"),
    (["pseudolabel", "--beta", "-5"], "argument --beta: must be a finite number > 0, got -5"),
    (["pseudolabel", "--box-margin-mm", "-1"], "argument --box-margin-mm: must be a finite number >= 0"),
    (["simulate", "label.nii.gz", "--kind", "extreme", "--noise-mm", "-1"], "argument --noise-mm: must be"),
    (["simulate", "label.nii.gz", "--kind", "extreme", "--seed", "-1"], "argument --seed: must be a whole number >= 0"),
    (["benchmark", "--noise-mm", "inf"], "argument --noise-mm: must be a finite number >= 0"),
    (["benchmark", "--limit", "0"], "argument --limit: must be a whole number >= 1"),
])
def test_numeric_options_are_range_checked_where_parsed(args, phrase, tmp_path):
    result = cli(*args, "--out", tmp_path / "x.seg.nrrd", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr and phrase in result.stderr, result.stderr


def test_config_sections_refuse_nan_and_negative_numbers(case, tmp_path):
    def job(**sections):
        data = {"recipe": "extreme_points", "output": str(tmp_path / "run"),
                "cases": [{"image": str(case["image"]), "points": str(case["points"])}], **sections}
        path = tmp_path / "job.json"
        path.write_text(json.dumps(data))  # Python's JSON writes NaN, and reads it back
        return path

    refused(cli("train", "--config", job(rounds={"erosion_mm": float("nan")})), "rounds.erosion_mm must be a finite")
    refused(cli("train", "--config", job(training={"weight_decay": -1.0})), "training.weight_decay must be >= 0")
    refused(cli("train", "--config", job(pseudolabel={"beta": -3})), "pseudolabel.beta must be a finite number > 0")
    assert not (tmp_path / "run").exists()


# -- images that are not what they seem --------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["constant", "label map"])
def test_image_without_contrast_or_a_label_map_as_image_is_said(case, tmp_path, kind):
    _, label = make_ellipsoid(shape=(40, 36, 30))
    array = np.zeros(label.shape, np.float32) if kind == "constant" else label.array * 2
    image = write_volume(label.with_array(array), tmp_path / "suspect.nii.gz")
    result = cli("pseudolabel", "--image", image, "--points", case["points"], "--out", tmp_path / "o.seg.nrrd")
    warning = ("has no contrast (every voxel is 0)" if kind == "constant"
               else "looks like a label map (only the values [0, 2])")
    assert f"extremeseg pseudolabel: warning: image {image} {warning}" in result.stderr, result.stderr


@pytest.mark.parametrize("suffix", [".nii", ".nrrd"])
def test_image_too_large_for_memory_says_so_with_its_size(tmp_path, suffix):
    path = tmp_path / f"huge{suffix}"
    if suffix == ".nii":
        header = nib.Nifti1Header()
        header.set_data_shape((4096, 4096, 4096))
        header.set_data_dtype(np.float32)
        header["vox_offset"] = 352
        path.write_bytes(header.binaryblock + b"\0" * 4)  # a header that declares 256 GiB, and no voxels
    else:
        path.write_text("NRRD0004\ntype: float\ndimension: 3\nsizes: 4096 4096 4096\nencoding: raw\n\n")
    result = cli("pseudolabel", "--image", path, "--points", tmp_path / "p.mrk.json", "--out", tmp_path / "o.seg.nrrd")
    refused(result, "is too large", "[4096, 4096, 4096] voxels of float32 (256.0 GiB", "of memory available here")


# -- model files -----------------------------------------------------------------------------------------------

@pytest.fixture
def trained_model(tmp_path_factory):
    """A real model file (tiny network, untrained weights suffice for argument checks)."""
    import torch

    from ExtremeSegLib.training.data import InputSpec
    from ExtremeSegLib.training.model_file import save_model
    from ExtremeSegLib.training.networks import build_network, plan_network

    kernels, strides = plan_network((1.0, 1.2, 1.5), (16, 16, 16), min_feature_size=2, max_levels=3)
    params = dict(in_channels=2, out_channels=2, kernels=kernels, strides=strides, filters=[4, 8, 16], dropout=0.0,
                  dropout_levels=None, norm="instance")
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("model")
    description = {"recipe": "extreme_points", "network": params,
                   "inputs": InputSpec(cues=("heatmap",)).resolved("mri", (1.0, 1.2, 1.5)).to_dict(),
                   "patch_size": [16, 16, 16], "classes": [{"name": "object", "label_values": [1]}]}
    return save_model(folder / "model.pt", build_network(**params), description)


def test_predict_with_a_folder_as_model_names_the_file_inside(case, trained_model, tmp_path):
    result = cli("predict", "--model", trained_model.parent, "--image", case["image"], "--out", tmp_path / "o.seg.nrrd")
    refused(result, "is a folder, not a model file", f"e.g. {trained_model}")


# -- benchmark ---------------------------------------------------------------------------------------------------

@pytest.fixture
def data_folder(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    for n in range(2):
        image, label = make_ellipsoid(shape=(24, 22, 20), radii_mm=(7.0, 6.0, 5.0), seed=n)
        write_volume(image, folder / f"c{n}_image.nii.gz")
        write_volume(label, folder / f"c{n}_label.nii.gz")
    return folder


@pytest.mark.parametrize("extra, phrase", [
    (["--structures", "h=9"], "structure 'h' (label values [9]) occurs in none of the 2 reference label maps, "
                              "which hold the values [0, 1]"),
    (["--structures", "h=1", "--method", "extreme-points-rw", "--option", "betta=3"],
     "unknown method 'extreme-points-rw' --option parameter 'betta'; known:"),
    (["--structures", "h=1", "--method", "extreme-points-rw", "--option", "beta=high"],
     "--option beta must be a finite number > 0, got 'high'"),
    (["--structures", "h=1", "--option", "beta=3"], "method 'extreme-box' takes no --option settings, got beta"),
])
def test_benchmark_refuses_absent_structures_and_bad_options_and_leaves_no_folder(data_folder, tmp_path, extra,
                                                                                  phrase):
    args = ["benchmark", "--data", data_folder, "--method", "extreme-box", "--out", tmp_path / "results"]
    refused(cli(*args, *extra), phrase)
    assert not (tmp_path / "results").exists()  # the corrected rerun is not blocked by an empty predictions/
    if extra == ["--structures", "h=9"]:  # one corrected rerun shows it (each costs a few seconds)
        assert cli(*args, "--structures", "h=1").returncode == 0


# -- training ----------------------------------------------------------------------------------------------------

def write_job(folder: Path, cases=2, **sections) -> Path:
    """A small extreme-points job (real files); ``sections`` replace or add config sections."""
    entries = []
    for n in range(cases):
        image, label = make_ellipsoid(shape=(24, 22, 12), radii_mm=(7.0, 6.0, 5.0), spacing=(1.0, 1.0, 2.0), seed=n)
        write_volume(image, folder / f"c{n}_image.nii.gz", overwrite=True)
        write_volume(label, folder / f"c{n}_label.nii.gz", overwrite=True)
        write_points(folder / f"c{n}.mrk.json", simulate_extreme_points(label, seed=n), overwrite=True)
        entries.append({"image": f"c{n}_image.nii.gz", "points": f"c{n}.mrk.json", "label": f"c{n}_label.nii.gz"})
    data = {"recipe": "extreme_points", "output": "run", "cases": entries, "inputs": {"pad_mm": 2.0},
            "network": {"filters": [4, 8, 16]}, "training": {"epochs": 1, "steps_per_epoch": 1},
            "rounds": {"max_rounds": 1}, "device": "cpu", **sections}
    path = folder / "job.json"
    path.write_text(json.dumps(data))
    return path


def test_train_output_that_is_a_file(tmp_path):
    (tmp_path / "taken").write_text("a file of the user's")
    refused(cli("train", "--config", write_job(tmp_path, output="taken"), fresh=True),
            "taken exists and is not a folder")
    assert (tmp_path / "taken").read_text() == "a file of the user's"


def test_train_on_a_full_disk_is_a_sentence(tmp_path):
    disk = _mount(tmp_path / "disk", "size=64k")  # the state files fit, the first checkpoint does not
    try:
        result = cli("train", "--config", write_job(tmp_path, output=str(disk / "run")))
        refused(result, "cannot write", "the disk is full")
    finally:
        unmounted = subprocess.run(["umount", str(disk)], capture_output=True, text=True)
    # in this process: the failed checkpoint left no file open on the disk ("target is busy" if it did)
    assert unmounted.returncode == 0, unmounted.stderr


def test_resume_with_damaged_state_says_how_to_start_over(tmp_path):
    job = write_job(tmp_path)
    state = tmp_path / "run" / "state"
    state.mkdir(parents=True)
    (state / "state.json").write_text('{"round": 0, "pha')  # cut off mid-write by a crash outside ExtremeSeg
    refused(cli("train", "--config", job, "--resume"), "cannot be resumed: state/job.json is missing",
            "to start over, delete")
    (state / "job.json").write_text(json.loads(json.dumps("{}")))
    refused(cli("train", "--config", job, "--resume"), "state/state.json is damaged", "to start over, delete")


def test_a_failed_start_leaves_nothing_and_the_corrected_job_runs(tmp_path):
    refused(cli("train", "--config", write_job(tmp_path, classes=[{"name": "object", "label_values": [7]}])),
            "class 'object': its label_values [7] occur in none of the 2 label files")
    assert not (tmp_path / "run").exists()
    done = cli("train", "--config", write_job(tmp_path))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "run" / "model.pt").is_file()


def test_second_train_on_a_running_folder_is_refused(tmp_path):
    from ExtremeSegLib.run_lock import RunLock

    job = write_job(tmp_path)
    with RunLock(tmp_path / "run") as lock:  # this test process is the run in progress, another one is refused
        lock.acquire()
        refused(cli("train", "--config", job, "--resume", fresh=True), "a run is in progress in", "--resume")
        refused(cli("train", "--config", job, fresh=True), "a run is in progress in")
    assert cli("train", "--config", job).returncode == 0  # released: a lock file left behind blocks nothing


def test_wrong_click_count_names_the_file(tmp_path):
    job = write_job(tmp_path)
    _, label = make_ellipsoid(shape=(24, 22, 12), radii_mm=(7.0, 6.0, 5.0), spacing=(1.0, 1.0, 2.0), seed=1)
    write_points(tmp_path / "c1.mrk.json", simulate_extreme_points(label, seed=1)[:5], overwrite=True)
    refused(cli("train", "--config", job), f"{tmp_path / 'c1.mrk.json'}: extreme points: expected exactly 6 clicks",
            "got 5")


def test_patch_that_cannot_fit_in_memory_is_refused_with_its_size(tmp_path):
    job = write_job(tmp_path, training={"patch_size": [2048, 2048, 2048]})
    refused(cli("train", "--config", job), "training patch [2048, 2048, 2048] (batch 2) needs at least",
            "GiB of memory available here")
    assert not (tmp_path / "run").exists()


def test_scribbles_that_never_mark_a_class_are_refused_naming_it(tmp_path):
    from test_scribbles import heart_phantom

    cases = []
    for n in range(2):
        image, _, scribble = heart_phantom(shape=(32, 32, 3), seed=n)
        array = scribble.array.copy()
        array[array == 2] = 3  # the disk's strokes erased (3 = unannotated with 2 classes)
        cases.append({"image": str(write_volume(image, tmp_path / f"c{n}_image.nii.gz")),
                      "scribble": str(write_volume(scribble.with_array(array), tmp_path / f"c{n}_scribble.nii.gz"))})
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"recipe": "scribbles", "output": "run", "cases": cases, "device": "cpu",
                               "classes": [{"name": "ring", "label_values": [1]},
                                           {"name": "disk", "label_values": [2]}]}))
    refused(cli("train", "--config", job), "class 'disk' is marked by no scribble in the 2 training cases")
    assert not (tmp_path / "run").exists()
