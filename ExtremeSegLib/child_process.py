"""Run an ``extremeseg`` command (training, prediction) in a child process and follow its progress.

The GUI must never wait on a long job: :class:`ChildRun` starts the child, reads its JSON-lines
progress (see :mod:`ExtremeSegLib.progress`) on two reader threads, and hands the events over
through :meth:`ChildRun.poll`, which never blocks (Slicer calls it from a QTimer; the console or a
script can call :meth:`ChildRun.wait`). Cancelling follows the progress contract: a ``CANCEL``
file in the run folder plus SIGTERM (the child stops at its next check, after its last
checkpoint), then a kill if it is still alive after ``grace_s`` seconds.

Inside Slicer the process started is the ``PythonSlicer`` launcher (CTK AppLauncher), which starts
the real interpreter as its own child and forwards no signal to it. So the child gets a process
group of its own (POSIX: a new session; Windows: a new process group) and every signal goes to
the whole group (Windows: ``taskkill /T`` kills the tree); whether the job still runs is read
from its output pipes, which the worker holds open until it exits, not from the launcher's pid.

The interpreter is a parameter: outside Slicer it is ``sys.executable``; inside Slicer the module
passes PythonSlicer (Slicer's own ``sys.executable`` is the application, not a Python).
Pure Python: no qt, no slicer.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError

#: Exit status the CLI uses for a cancelled run (``cli.py``) and for bad input.
EXIT_CANCELLED = 130
EXIT_INPUT_ERROR = 2

#: Lines of stderr kept to explain a failure.
STDERR_TAIL_LINES = 40


def package_root() -> Path:
    """The folder that holds the ``ExtremeSegLib`` package (what the child needs on its PYTHONPATH)."""
    return Path(__file__).resolve().parent.parent


def cli_command(subcommand: str, *args, python=None) -> list:
    """``[python, -m, ExtremeSegLib.cli, subcommand, *args]``: the same command line as outside Slicer."""
    return [str(python or sys.executable), "-m", "ExtremeSegLib.cli", subcommand, *[str(a) for a in args]]


def train_command(config_path, resume: bool = False, python=None) -> list:
    """``extremeseg train --config CFG --progress-jsonl [--resume]`` run by ``python``."""
    args = ["--config", str(config_path), "--progress-jsonl"]
    if resume:
        args.append("--resume")
    return cli_command("train", *args, python=python)


@dataclass
class RunState:
    """What the progress events said so far (what a progress bar shows)."""

    status: str = "starting"  # starting, running, done, cancelled, failed
    total_epochs: int = 0
    rounds: int = 0
    device: str = ""
    round: int = 0
    epoch: int = 0  # epochs finished, counted over all rounds
    loss: float | None = None
    dice: float | None = None
    messages: list = field(default_factory=list)  # (level, text) from "message" events
    outputs: dict = field(default_factory=dict)  # from the "done" event
    error: str = ""
    returncode: int | None = None
    resumable: bool = True  # training keeps checkpoints to resume from; a prediction has none

    @property
    def fraction(self) -> float:
        """Share of the epochs done, 0..1 (1 once finished)."""
        if self.status == "done":
            return 1.0
        return min(1.0, self.epoch / self.total_epochs) if self.total_epochs else 0.0

    @property
    def finished(self) -> bool:
        return self.status in ("done", "cancelled", "failed")

    def update(self, event: dict) -> None:
        """Fold one progress event into the state."""
        kind = event.get("event")
        if kind == "start":
            self.status = "running"
            self.total_epochs = int(event.get("total_epochs") or 0)
            self.rounds = int(event.get("rounds") or 0)
            self.device = str(event.get("device") or "")
        elif kind == "epoch":
            self.status = "running"
            self.round = int(event.get("round") or 0)
            # "epoch" counts within a round; the bar counts over the whole run.
            per_round = int(event.get("epochs") or 0)
            done = int(event.get("epoch") or 0)
            self.epoch = max(self.epoch, self.round * per_round + done if per_round else done)
            self.loss = event.get("loss")
            self.dice = event.get("dice")
        elif kind == "round":
            self.round = int(event.get("round") or 0)
            if event.get("dice") is not None:
                self.dice = event.get("dice")
        elif kind == "message":
            self.messages.append((event.get("level", "info"), str(event.get("text", ""))))
        elif kind == "done":
            self.outputs = dict(event.get("outputs") or {})
        elif kind == "error":
            # `extremeseg train` prefixes the kind ("error: ...", "cancelled: ..."); the status says it already
            self.error = str(event.get("message", "")).removeprefix("error: ")

    def summary(self) -> str:
        """One line for a status label: epoch, loss, Dice."""
        if self.status == "failed":
            return f"failed: {self.error}"
        if self.status == "cancelled":
            return "cancelled (the last checkpoint is kept; resume to continue)" if self.resumable else "cancelled"
        if self.status == "done":
            return "done"
        parts = [f"epoch {self.epoch}/{self.total_epochs}" if self.total_epochs else "starting"]
        if self.rounds > 1:
            parts.append(f"round {self.round + 1}/{self.rounds}")
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4f}")
        if self.dice is not None:
            parts.append(f"Dice {self.dice:.3f}")
        if self.device:
            parts.append(self.device)
        return ", ".join(parts)


class ChildRun:
    """One child process speaking the JSON-lines progress protocol.

    ``argv``: the full command line (see :func:`train_command`); ``run_dir``: the run folder the
    child watches for a ``CANCEL`` file; ``env``: extra environment variables. The folder holding
    ``ExtremeSegLib`` is put first on the child's PYTHONPATH so the child imports the same core
    as the parent (inside Slicer the package lives in the extension's module folder).
    ``resumable``: whether a cancelled run keeps checkpoints to resume from (training; not prediction).
    """

    def __init__(self, argv, run_dir, env=None, grace_s: float = 10.0, cwd=None, resumable: bool = True):
        self.argv = [str(a) for a in argv]
        self.run_dir = Path(run_dir)
        self.grace_s = float(grace_s)
        self.cwd = cwd
        self.state = RunState(resumable=resumable)
        self._extra_env = dict(env or {})
        self._proc = None
        self._events = queue.Queue()
        self._stderr_tail = deque(maxlen=STDERR_TAIL_LINES)
        self._threads = []
        self._cancel_requested = False
        self._kill_deadline = None
        self._killed = False

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> "ChildRun":
        if self._proc is not None:
            raise RuntimeError("this run was already started")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        cancel_file = self.run_dir / "CANCEL"
        if cancel_file.exists():
            cancel_file.unlink()  # a stale request from an earlier run must not stop this one
        env = os.environ.copy()
        env.update(self._extra_env)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(package_root()), env.get("PYTHONPATH", "")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        kwargs = {}
        if os.name == "nt":
            info = subprocess.STARTUPINFO()
            info.dwFlags |= subprocess.STARTF_USESHOWWINDOW  # no console window pops up from Slicer
            kwargs["startupinfo"] = info
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
        else:
            kwargs["start_new_session"] = True  # kill() can take data-loader workers down with it
        try:
            self._proc = subprocess.Popen(
                self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                env=env, cwd=self.cwd, text=True, encoding="utf-8", errors="replace", bufsize=1, **kwargs,
            )
        except OSError as err:
            raise InputError(f"cannot start {self.argv[0]!r}: {err}; check the Python interpreter path") from err
        self.state.status = "running"
        self._threads = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for t in self._threads:
            t.start()
        return self

    @property
    def pid(self):
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        """Whether the job may still run: the started process is alive or anything of its process
        tree still holds its output pipes (a launcher's worker outlives a launcher that was killed)."""
        if self._proc is None:
            return False
        return self._proc.poll() is None or any(t.is_alive() for t in self._threads)

    def cancel(self) -> None:
        """Ask the child to stop now (CANCEL file + SIGTERM); :meth:`poll` kills it after ``grace_s``.

        Returns at once. The child writes nothing after its last checkpoint, so the run can be resumed.
        """
        if self._proc is None or self._cancel_requested:
            return
        self._cancel_requested = True
        (self.run_dir / "CANCEL").write_text("cancel requested\n")
        if self.running and os.name != "nt":  # Windows has no SIGTERM for a tree: the CANCEL file asks there
            self._signal_group(signal.SIGTERM)
        self._kill_deadline = time.monotonic() + self.grace_s

    def kill(self) -> None:
        """Stop the child's whole process tree immediately (the launcher, the worker, its data loaders)."""
        if not self.running:
            return
        self._killed = True
        if os.name == "nt":
            # /T: the tree, since the launcher's worker is not in a job object we could close
            subprocess.run(["taskkill", "/F", "/T", "/PID", str(self._proc.pid)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, check=False)
        else:
            self._signal_group(signal.SIGKILL)

    def _signal_group(self, signum) -> None:
        """Send ``signum`` to the child's process group (its pid: the child leads a session of its own).
        The group outlives its leader while any member runs, so this reaches an orphaned worker too."""
        try:
            os.killpg(self._proc.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass

    # -- progress -------------------------------------------------------------------------------
    def poll(self) -> list:
        """Events that arrived since the last call (never blocks); updates :attr:`state`.

        Non-JSON output lines come back as ``{"event": "log", "text": ...}``. Once the child has
        exited and its output is drained, :attr:`state` holds the final status.
        """
        if (self._kill_deadline is not None and time.monotonic() > self._kill_deadline and self.running):
            self.kill()
        exited = self._proc is not None and not self.running  # the tree has exited and its output is read
        events = []
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                break
            self.state.update(event)
            events.append(event)
        if exited and not self.state.finished:
            self._finish(self._proc.returncode)
        return events

    def wait(self, timeout: float | None = None, interval: float = 0.1, callback=None) -> RunState:
        """Block until the child finishes (or ``timeout`` s pass), calling ``callback(event)`` per event."""
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            for event in self.poll():
                if callback is not None:
                    callback(event)
            if self.state.finished:
                return self.state
            if end is not None and time.monotonic() > end:
                return self.state
            time.sleep(interval)

    @property
    def stderr_tail(self) -> str:
        return "\n".join(self._stderr_tail)

    # -- internals ------------------------------------------------------------------------------
    def _read_stdout(self) -> None:
        for line in self._proc.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                event = None
            if not isinstance(event, dict) or "event" not in event:
                event = {"event": "log", "text": line}
            self._events.put(event)

    def _read_stderr(self) -> None:
        for line in self._proc.stderr:
            line = line.rstrip()
            if line:
                self._stderr_tail.append(line)

    def _finish(self, returncode: int) -> None:
        s = self.state
        s.returncode = returncode
        if returncode == 0 and not self._killed:
            s.status = "done"
        elif returncode == EXIT_CANCELLED or (self._cancel_requested and (self._killed or returncode < 0)):
            s.status = "cancelled"
        else:
            s.status = "failed"
            if not s.error:
                s.error = self._error_from_stderr(returncode)

    def _error_from_stderr(self, returncode: int) -> str:
        lines = list(self._stderr_tail)
        # The CLI prints a user error as one "extremeseg CMD: error: ..." line; a bug ends with its traceback.
        for line in reversed(lines):
            if ": error: " in line and line.startswith("extremeseg"):
                return line.split(": error: ", 1)[1]
        if lines:
            return lines[-1] + f" (exit status {returncode}; see the log for the full output)"
        if returncode < 0:
            return f"the process was stopped by signal {-returncode}"
        return f"the process exited with status {returncode} without an error message"
