"""The child-process runner with real child processes speaking the real progress protocol.

The children are small scripts built on ``ExtremeSegLib.progress.Progress`` (the class the training
command uses), started from a folder where ``ExtremeSegLib`` is importable only through the
PYTHONPATH the runner sets.
"""

import json
import os
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ExtremeSegLib.child_process import ChildRun, RunState, cli_command, train_command

CHILD = textwrap.dedent(
    """
    import json, os, sys, time
    from pathlib import Path
    from ExtremeSegLib.errors import CancelledError, InputError
    from ExtremeSegLib.io.volumes import write_atomically
    from ExtremeSegLib.progress import Progress

    run_dir, epochs, pause, mode = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    (run_dir / "worker.pid").write_text(str(os.getpid()))
    # "signal-only": a worker that does not watch the CANCEL file, so only a signal can stop it
    progress = Progress(jsonl=True, cancel_file=None if mode == "signal-only" else run_dir / "CANCEL")
    progress.install_signal_handlers()
    if mode == "deaf":  # a child that ignores the cancel request (stuck in a long step)
        import signal
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    progress.emit("start", total_epochs=epochs, rounds=1, device="cpu")
    print("a library printed this")
    try:
        for epoch in range(1, epochs + 1):
            time.sleep(pause)
            if mode == "bug" and epoch == 2:
                raise ZeroDivisionError("boom in epoch 2")
            if mode == "input" and epoch == 2:
                raise InputError("the config names a volume that does not exist: /nowhere.nrrd")
            # atomically, like the engine's checkpoints: a child killed mid-write must not leave an empty file
            write_atomically(run_dir / "checkpoint.json", True,
                             lambda tmp: tmp.write_text(json.dumps({"epoch": epoch})))
            progress.emit("epoch", round=0, epoch=epoch, epochs=epochs, loss=1.0 / epoch, dice=0.5 + 0.1 * epoch)
            if mode != "deaf":
                progress.check_cancelled()
        progress.emit("done", outputs={"model": str(run_dir / "model.pt")})
    except CancelledError as err:
        print(f"extremeseg train: cancelled: {err}", file=sys.stderr)
        sys.exit(130)
    except InputError as err:
        print(f"extremeseg train: error: {err}", file=sys.stderr)
        sys.exit(2)
    """
)


# Like PythonSlicer (CTK AppLauncher): starts the real interpreter as its own child, passing its stdout and
# stderr on, forwards no signal to it, and exits with its status. "deaf": it ignores SIGINT/SIGTERM itself
# (it keeps waiting for the worker); "mortal": the default action, it dies and leaves the worker orphaned.
LAUNCHER = textwrap.dedent(
    """
    import signal, subprocess, sys
    if sys.argv[1] == "deaf":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    sys.exit(subprocess.call(sys.argv[2:]))
    """
)


def _child(tmp_path, epochs, pause, mode="ok", grace_s=10.0, launcher=None):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    run_dir = tmp_path / "run"
    run_dir.mkdir(exist_ok=True)
    argv = [sys.executable, str(script), str(run_dir), str(epochs), str(pause), mode]
    if launcher is not None:
        (tmp_path / "launcher.py").write_text(LAUNCHER)
        argv = [sys.executable, str(tmp_path / "launcher.py"), launcher] + argv
    # cwd outside the repository: the child finds ExtremeSegLib only through the runner's PYTHONPATH
    return ChildRun(argv, run_dir, grace_s=grace_s, cwd=str(tmp_path)), run_dir


def _wait_for(run, predicate, timeout=20.0):
    end = time.monotonic() + timeout
    seen = []
    while time.monotonic() < end:
        seen += run.poll()
        if predicate(seen):
            return seen
        time.sleep(0.02)
    raise AssertionError(f"condition not reached; events so far: {seen}")


def test_progress_events_are_parsed_and_the_run_finishes(tmp_path):
    run, run_dir = _child(tmp_path, epochs=3, pause=0.0)
    events = []
    state = run.start().wait(timeout=30, callback=events.append)
    assert state.status == "done" and state.returncode == 0
    kinds = [e["event"] for e in events]
    assert kinds == ["start", "log", "epoch", "epoch", "epoch", "done"]
    assert events[1]["text"] == "a library printed this"
    assert state.total_epochs == 3 and state.epoch == 3 and state.fraction == 1.0
    assert state.loss == pytest.approx(1 / 3) and state.dice == pytest.approx(0.8)
    assert state.outputs == {"model": str(run_dir / "model.pt")}
    assert run.poll() == []  # nothing more once finished


def test_poll_never_blocks_while_the_child_works(tmp_path):
    run, _ = _child(tmp_path, epochs=2, pause=1.0)
    run.start()
    try:
        t0 = time.monotonic()
        run.poll()
        assert time.monotonic() - t0 < 0.5  # the child sleeps 1 s before its first epoch
        assert run.running and not run.state.finished
    finally:
        run.kill()
        run.wait(timeout=10)


def test_cancel_stops_promptly_and_keeps_the_last_checkpoint(tmp_path):
    run, run_dir = _child(tmp_path, epochs=500, pause=0.05)
    run.start()
    _wait_for(run, lambda seen: sum(e["event"] == "epoch" for e in seen) >= 2)
    run.cancel()
    assert (run_dir / "CANCEL").exists()
    t0 = time.monotonic()
    state = run.wait(timeout=20)
    assert time.monotonic() - t0 < 5  # well inside the 10 s grace: it stopped by itself, not killed
    assert state.status == "cancelled" and state.returncode == 130
    checkpoint = json.loads((run_dir / "checkpoint.json").read_text())
    assert 2 <= checkpoint["epoch"] < 500
    assert state.epoch == checkpoint["epoch"]  # every checkpointed epoch was reported
    assert "cancelled" in state.summary()


def test_a_child_that_ignores_cancel_is_killed_after_the_grace_period(tmp_path):
    run, run_dir = _child(tmp_path, epochs=500, pause=0.05, mode="deaf", grace_s=0.5)
    run.start()
    _wait_for(run, lambda seen: any(e["event"] == "epoch" for e in seen))
    run.cancel()
    state = run.wait(timeout=20)
    assert state.status == "cancelled"
    assert state.returncode < 0  # killed by a signal
    assert json.loads((run_dir / "checkpoint.json").read_text())["epoch"] < 500


def _process_gone(pid) -> bool:
    """True once ``pid`` no longer runs (a zombie waiting for a reaper counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    status = Path(f"/proc/{pid}/stat")
    try:
        return status.read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return True


@pytest.mark.skipif(os.name == "nt", reason="POSIX process groups; Windows takes the CANCEL file and taskkill /T")
@pytest.mark.parametrize("launcher", ["deaf", "mortal"])
def test_cancel_reaches_the_worker_behind_a_launcher_within_a_second(tmp_path, launcher):
    # the worker ignores the CANCEL file: only the signal to the process group can stop it
    run, run_dir = _child(tmp_path, epochs=100000, pause=0.05, mode="signal-only", launcher=launcher)
    run.start()
    _wait_for(run, lambda seen: any(e["event"] == "epoch" for e in seen))
    worker = int((run_dir / "worker.pid").read_text())
    assert worker != run.pid  # the launcher really sits in between
    run.cancel()
    state = run.wait(timeout=1.0)
    assert state.status == "cancelled", f"not cancelled within 1 s: {state.status}, {run.stderr_tail}"
    assert not run._killed  # the worker stopped by itself on SIGTERM, long before the grace period ended
    assert _process_gone(worker)
    assert "cancelled: run cancelled" in run.stderr_tail  # the worker's own CancelledError


@pytest.mark.skipif(os.name == "nt", reason="POSIX process groups; Windows takes the CANCEL file and taskkill /T")
@pytest.mark.parametrize("launcher", ["deaf", "mortal"])
def test_the_grace_period_kill_takes_down_the_worker_behind_a_launcher(tmp_path, launcher):
    run, run_dir = _child(tmp_path, epochs=100000, pause=0.05, mode="deaf", grace_s=0.5, launcher=launcher)
    run.start()
    _wait_for(run, lambda seen: any(e["event"] == "epoch" for e in seen))
    worker = int((run_dir / "worker.pid").read_text())
    run.cancel()
    state = run.wait(timeout=20)
    assert state.status == "cancelled" and run._killed
    end = time.monotonic() + 10
    while not _process_gone(worker) and time.monotonic() < end:
        time.sleep(0.05)
    assert _process_gone(worker), "the worker outlived the kill"
    assert not run.running


def test_a_cancelled_prediction_does_not_speak_of_checkpoints():
    state = RunState(status="cancelled", resumable=False)
    assert state.summary() == "cancelled"
    assert "checkpoint" in RunState(status="cancelled").summary()


def test_a_stale_cancel_file_does_not_stop_a_new_run(tmp_path):
    run, run_dir = _child(tmp_path, epochs=2, pause=0.0)
    (run_dir / "CANCEL").write_text("from an earlier run")
    assert run.start().wait(timeout=30).status == "done"


@pytest.mark.parametrize(
    "mode, message",
    [
        ("input", "the config names a volume that does not exist: /nowhere.nrrd"),
        ("bug", "ZeroDivisionError: boom in epoch 2"),
    ],
)
def test_a_failing_child_reports_its_error(tmp_path, mode, message):
    run, _ = _child(tmp_path, epochs=3, pause=0.0, mode=mode)
    state = run.start().wait(timeout=30)
    assert state.status == "failed"
    assert state.returncode != 0
    assert message in state.error
    assert state.epoch == 1  # progress up to the failure was still delivered
    assert state.summary().startswith("failed: ")


def test_an_interpreter_that_does_not_exist_is_an_input_error(tmp_path):
    from ExtremeSegLib.errors import InputError

    run = ChildRun([str(tmp_path / "no-python"), "-c", "pass"], tmp_path / "run")
    with pytest.raises(InputError, match="cannot start"):
        run.start()


def test_command_lines_match_the_cli():
    assert train_command("cfg.json", python="py") == [
        "py", "-m", "ExtremeSegLib.cli", "train", "--config", "cfg.json", "--progress-jsonl"]
    assert train_command("cfg.json", resume=True, python="py")[-1] == "--resume"
    assert cli_command("predict", "--model", "m.pt")[:3] == [sys.executable, "-m", "ExtremeSegLib.cli"]


def test_run_state_counts_epochs_over_rounds():
    state = RunState()
    state.update({"event": "start", "total_epochs": 6, "rounds": 2, "device": "cpu"})
    state.update({"event": "epoch", "round": 1, "epoch": 2, "epochs": 3, "loss": 0.25, "dice": None})
    assert state.epoch == 5 and state.fraction == pytest.approx(5 / 6)
    assert state.summary() == "epoch 5/6, round 2/2, loss 0.2500, cpu"


@pytest.fixture
def tiny_model(tmp_path):
    """An untrained fully automatic model file and an image to segment (what `extremeseg predict` reads)."""
    torch = pytest.importorskip("torch")
    from conftest import make_ellipsoid

    from ExtremeSegLib.io import write_volume
    from ExtremeSegLib.training.data import InputSpec
    from ExtremeSegLib.training.model_file import save_model
    from ExtremeSegLib.training.networks import build_network, plan_network

    image, _ = make_ellipsoid(shape=(20, 18, 12), radii_mm=(6.0, 5.0, 4.0), spacing=(1.0, 1.0, 1.0))
    write_volume(image, tmp_path / "image.nrrd")
    kernels, strides = plan_network((1.0, 1.0, 1.0), (8, 8, 8), min_feature_size=2, max_levels=3)
    params = dict(in_channels=1, out_channels=2, kernels=kernels, strides=strides, filters=[4, 8, 16])
    inputs = InputSpec(cues=(), crop_to_points=False).resolved("mri", (1.0, 1.0, 1.0))
    torch.manual_seed(0)
    save_model(tmp_path / "model.pt", build_network(**params),
               {"recipe": "scribbles", "network": params, "inputs": inputs.to_dict(), "patch_size": [8, 8, 8],
                "classes": [{"name": "object", "label_values": [1]}]})
    return tmp_path


def test_extremeseg_predict_stops_on_its_cancel_file_and_writes_nothing(tiny_model, capsys):
    from ExtremeSegLib.cli import main

    common = ["predict", "--model", str(tiny_model / "model.pt"), "--image", str(tiny_model / "image.nrrd"),
              "--device", "cpu"]
    assert main(common + ["--out", str(tiny_model / "a.seg.nrrd")]) == 0
    (tiny_model / "CANCEL").write_text("cancel requested\n")  # the default cancel file: beside the output
    assert main(common + ["--out", str(tiny_model / "b.seg.nrrd")]) == 130
    assert not (tiny_model / "b.seg.nrrd").exists()
    said = capsys.readouterr().err
    assert "prediction cancelled" in said and "checkpoint" not in said


def test_a_cancel_request_stops_the_sliding_windows(tiny_model):
    import numpy as np

    from ExtremeSegLib.errors import CancelledError
    from ExtremeSegLib.progress import Progress
    from ExtremeSegLib.training.inference import predict_probabilities
    from ExtremeSegLib.training.model_file import load_model

    model = load_model(tiny_model / "model.pt", "cpu")
    inputs = np.zeros((1, 24, 24, 24), np.float32)  # 27 windows of 8^3
    calls = []
    original = model.network.forward
    model.network.forward = lambda x: calls.append(1) or original(x)
    progress = Progress(jsonl=True, stream=open(os.devnull, "w"))
    progress.cancel()  # e.g. SIGTERM arrived while the first windows ran
    with pytest.raises(CancelledError):
        predict_probabilities(model.network, inputs, (8, 8, 8), torch_device("cpu"), progress=progress)
    assert calls == []  # stopped before the first window, not after all of them


def torch_device(name):
    import torch

    return torch.device(name)
