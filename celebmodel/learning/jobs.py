"""Training jobs for the app: the CLI's ``train`` in its own process, found again from any page.

A training is never a thread of the Streamlit server: it is ``python -m celebmodel train`` in a
new session, so it survives page reloads, closed tabs and a restarted server, and every user
sees the same run. One training at a time: a lock file under :func:`runs_root`, created with
``O_EXCL``, names the run that holds it, so two tabs clicking Start together cannot both win.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from ..config import TrainConfig
from ..errors import JobError, RunError
from ..runs.run import ACTIVE, Run, list_runs, new_run_dir, pid_alive, prepare_root, readable_log
from ..storage import atomic_write_json, data_root, now_iso, runs_root

LOCK_NAME = ".training.lock"
GUARD_NAME = ".training.guard"
OUTPUT_NAME = "train.out"  # the process's stdout and stderr, for failures before log.txt exists


_children: dict[int, subprocess.Popen] = {}  # pid -> process this server started
_stopping: set[int] = set()  # pids this server asked to stop
_children_lock = threading.Lock()


def train_command(config_file: str | Path, run_dir: str | Path) -> list[str]:
    """The CLI call that trains the settings in ``config_file`` into ``run_dir``: the trainer
    reads the very file the app wrote, so no setting can be lost on the way."""
    return [
        sys.executable,
        "-m",
        "celebmodel",
        "train",
        "--config",
        str(config_file),
        "--run-dir",
        str(run_dir),
    ]


@contextlib.contextmanager
def _guard(root: Path) -> Iterator[None]:
    """Serialise lock checks between server threads and processes (the stale-lock cleanup)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / GUARD_NAME, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _lock_holder(root: Path) -> Run | None:
    """The run named by the lock file while it is still queued or running, else None."""
    try:
        holder = json.loads((root / LOCK_NAME).read_text(encoding="utf-8"))
        run = Run(root / str(holder["run"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return run if run.state in ACTIVE else None


def active(root: str | Path | None = None) -> Run | None:
    """The queued or running training (the app's or one started from the command line)."""
    reap()
    root = Path(root) if root else runs_root()
    holder = _lock_holder(root)
    if holder is not None:
        return holder
    return next((run for run in list_runs(root) if run.state in ACTIVE), None)


def start(
    config: TrainConfig, root: str | Path | None = None, name: str = "", notes: str = ""
) -> Run:
    """Queue ``config`` as a new run (named ``name``, with ``notes``) and launch its training
    process; refuse a second one."""
    data_dir = Path(config.data_dir).expanduser().resolve()
    config = dataclasses.replace(config, data_dir=str(data_dir)).validate()
    if not data_dir.is_dir():
        raise JobError(f"{data_dir}: dataset folder does not exist")
    root = prepare_root(root)
    reap()
    with _guard(root):
        busy = _lock_holder(root) or next(
            (run for run in list_runs(root) if run.state in ACTIVE), None
        )
        if busy is not None:
            raise JobError(
                f"training {busy.name} is still {busy.state}: wait for it to end or stop it "
                "before starting another"
            )
        (root / LOCK_NAME).unlink(missing_ok=True)
        fd = os.open(root / LOCK_NAME, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        try:
            run = Run(new_run_dir(config.backbone, root))
            if name.strip() or notes.strip():
                run.set_meta(name, notes)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump({"run": run.name, "by": os.getpid(), "at": now_iso()}, handle)
            _launch(config, run)
        except BaseException:
            (root / LOCK_NAME).unlink(missing_ok=True)
            raise
    return run


def _launch(config: TrainConfig, run: Run) -> None:
    """Write status ``queued``, start the process, then record its pid while it imports."""
    queued = {"state": "queued", "pid": os.getpid(), "queued": now_iso(), "updated": now_iso()}
    config.save(run.file("config.json"))
    atomic_write_json(run.file("status.json"), queued)
    env = {
        **os.environ,
        "CELEBMODEL_RUNS": str(run.path.parent),
        "CELEBMODEL_DATA": str(data_root()),
        "PYTHONUNBUFFERED": "1",
    }
    try:
        with open(run.file(OUTPUT_NAME), "wb") as output:
            process = subprocess.Popen(
                train_command(run.file("config.json"), run.path),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
    except OSError as exc:
        atomic_write_json(
            run.file("status.json"),
            {**queued, "state": "failed", "error": f"cannot start training: {exc}"},
        )
        raise JobError(f"cannot start the training process: {exc}") from exc
    # The child writes "running" itself within about a second (before importing TensorFlow).
    if (run.read_json("status.json") or {}).get("state") == "queued":
        atomic_write_json(run.file("status.json"), {**queued, "pid": process.pid})
    with _children_lock:
        _children[process.pid] = process
    threading.Thread(target=_watch, args=(process, run), daemon=True).start()


def _watch(process: subprocess.Popen, run: Run) -> None:
    """Reap the child when it ends (no zombie) and settle a status it could not write."""
    process.wait()
    with _children_lock:
        _children.pop(process.pid, None)
        stopped = process.pid in _stopping
        _stopping.discard(process.pid)
    _settle(run, process.returncode, stopped)


def _settle(run: Run, returncode: int | None, stopped: bool = False) -> None:
    """Record how a training process ended when it could not say so itself.

    A process that died while queued or running gets ``failed`` (or ``cancelled`` when it was
    asked to stop). A stop request the trainer reported as a failure, because the signal's
    exception surfaced inside TensorFlow as another error, is recorded as ``cancelled``.
    """
    try:
        status = run.read_json("status.json") or {}
    except RunError:
        return
    state = status.get("state")
    if state == "failed" and stopped and not run.has_model():
        reported = str(status.get("error") or "").splitlines()[:1]
        note = f" (the trainer reported: {reported[0][:200]})" if reported else ""
        state, error = "cancelled", f"stopped on request{note}"
    elif state not in ACTIVE:
        return
    elif stopped or returncode in (-signal.SIGTERM, 130):
        state, error = "cancelled", "stopped on request"
    elif returncode == -signal.SIGKILL:
        state, error = "failed", "the training process was killed (out of memory?)"
    else:
        state, error = "failed", output_tail(run, 1) or f"training exited with code {returncode}"
    atomic_write_json(
        run.file("status.json"),
        {**status, "state": state, "error": error, "ended": status.get("ended") or now_iso()},
    )


def reap() -> None:
    """Collect any ended child of this server (the watcher threads normally do it first)."""
    with _children_lock:
        ended = [pid for pid, process in _children.items() if process.poll() is not None]
        for pid in ended:
            _children.pop(pid, None)


def stop(run: Run, wait: float = 15.0) -> str:
    """Ask a queued or running training to stop (SIGTERM); the run ends ``cancelled``.

    The trainer records SIGTERM and ends at its next safe point (a stage's step, a batch);
    a process still alive after ``wait`` seconds is killed. Waits for the process to end and
    returns the run's state then.
    """
    status = run.status()
    if status.get("state") not in ACTIVE:
        raise JobError(f"{run.name} is {status.get('state')}, not running: nothing to stop")
    pid = int(status.get("pid") or 0)
    if pid == os.getpid():
        raise JobError(f"{run.name}: its process has not started yet; try again in a second")
    with _children_lock:
        _stopping.add(pid)
    deadline = time.monotonic() + wait
    _signal(pid, signal.SIGTERM, run)
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if pid_alive(pid):
        _signal(pid, signal.SIGKILL, run)
        for _ in range(50):
            if not pid_alive(pid):
                break
            time.sleep(0.1)
    if not pid_alive(pid):
        _settle(run, None, stopped=True)
    return run.state


def _signal(pid: int, signum: int, run: Run) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass
    except PermissionError as exc:
        raise JobError(f"{run.name}: not allowed to stop process {pid} ({exc})") from exc


def output_tail(run: Run, lines: int = 20) -> str:
    """The last lines the training process printed (errors before ``log.txt`` existed)."""
    try:
        text = run.file(OUTPUT_NAME).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    kept = [line.rsplit("\r", 1)[-1] for line in text.split("\n")]  # progress bars: last state
    kept = [line for line in kept if line.strip()]
    return "\n".join(kept[-lines:])


def log_text(run: Run, lines: int = 15) -> str:
    """The end of a training's log as a page shows it: ``log.txt``, else what the process
    printed before that file existed, without traceback frames."""
    text = readable_log(run.log_tail(60) or output_tail(run, 60))
    return "\n".join(text.splitlines()[-lines:])
