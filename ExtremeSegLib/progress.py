"""Progress reports and cancellation for long runs (training, rounds, benchmarks).

Protocol (what the Slicer module reads from a child process): with ``--progress-jsonl`` every
report is one JSON object per line on stdout, flushed, with at least ``{"event": ...}``:

- ``{"event": "start", "total_epochs": int, "rounds": int, "device": str}``
- ``{"event": "epoch", "round": int, "epoch": int, "epochs": int, "loss": float, "dice": float|null,
  "seconds": float}`` (``seconds``: training time of the round so far; a recipe's evaluation may add
  ``"validation_dice"``)
- ``{"event": "round", "round": int, "dice": float|null, "agreement": float|null}``
- ``{"event": "message", "level": "info"|"warning", "text": str}``  (e.g. "GPU out of memory: patch halved")
- ``{"event": "done", "outputs": {...}}``  or  ``{"event": "error", "message": str}``

Cancellation: SIGINT/SIGTERM, or a file named ``CANCEL`` in the run folder (works on Windows too),
makes :meth:`Progress.check_cancelled` raise :class:`CancelledError` at the next check; the caller
has already written its last checkpoint.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

from .errors import CancelledError


class Progress:
    """Reports progress as JSON lines and/or a terminal bar, and answers "was I cancelled?"."""

    def __init__(self, jsonl: bool = False, stream=None, cancel_file=None, bar: bool = True):
        self.jsonl = jsonl
        self.stream = stream if stream is not None else sys.stdout
        self.cancel_file = Path(cancel_file) if cancel_file else None
        self.bar_enabled = bar and not jsonl
        self._bar = None
        self._cancelled = False

    # -- cancellation ---------------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        """Turn SIGINT/SIGTERM into a cancel request (main thread only)."""
        def handler(signum, frame):
            self._cancelled = True
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, handler)

    def cancel(self) -> None:
        self._cancelled = True

    @property
    def cancelled(self) -> bool:
        return self._cancelled or bool(self.cancel_file and self.cancel_file.exists())

    def check_cancelled(self) -> None:
        if self.cancelled:
            raise CancelledError("run cancelled; the last checkpoint is kept and the run can be resumed")

    # -- reports --------------------------------------------------------------------------------
    def emit(self, event: str, **fields) -> None:
        record = {"event": event, **fields}
        if self.jsonl:
            self.stream.write(json.dumps(record) + "\n")
            self.stream.flush()
        elif event == "message":
            self._write_line(f"[{fields.get('level', 'info')}] {fields.get('text', '')}")
        elif event == "error":
            self._write_line(f"error: {fields.get('message', '')}")

    def message(self, text: str, level: str = "info") -> None:
        self.emit("message", level=level, text=text)

    def bar(self, total: int, desc: str):
        """A tqdm bar on the terminal (a no-op object when reporting JSON lines)."""
        self.close_bar()
        if self.bar_enabled:
            from tqdm import tqdm
            self._bar = tqdm(total=total, desc=desc, file=sys.stderr, leave=False)
        return self

    def advance(self, n: int = 1, **postfix) -> None:
        if self._bar is not None:
            self._bar.update(n)
            if postfix:
                self._bar.set_postfix({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in postfix.items()})

    def close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _write_line(self, text: str) -> None:
        if self._bar is not None:
            self._bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr)
