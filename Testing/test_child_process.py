"""The child-process runner with real child processes speaking the real progress protocol.

The children are small scripts built on ``ExtremeSegLib.progress.Progress`` (the class the training
command uses), started from a folder where ``ExtremeSegLib`` is importable only through the
PYTHONPATH the runner sets.
"""

import json
import sys
import textwrap
import time

import pytest

from ExtremeSegLib.child_process import ChildRun, RunState, cli_command, train_command

CHILD = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from ExtremeSegLib.errors import CancelledError, InputError
    from ExtremeSegLib.io.volumes import write_atomically
    from ExtremeSegLib.progress import Progress

    run_dir, epochs, pause, mode = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    progress = Progress(jsonl=True, cancel_file=run_dir / "CANCEL")
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


def _child(tmp_path, epochs, pause, mode="ok", grace_s=10.0):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    run_dir = tmp_path / "run"
    argv = [sys.executable, str(script), str(run_dir), str(epochs), str(pause), mode]
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


def test_a_stale_cancel_file_does_not_stop_a_new_run(tmp_path):
    run, run_dir = _child(tmp_path, epochs=2, pause=0.0)
    run_dir.mkdir()
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
