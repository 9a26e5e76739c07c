"""The run folder: one process at a time, and an old run replaced only once the new one has a checkpoint.

* A run holds an exclusive lock on `<out_dir>/.lock` (fcntl.flock) for its
  whole life. A second process naming the same out_dir is refused at once,
  with the holder's pid. The kernel drops the lock when its process ends,
  however it ends, so a killed run leaves no lock behind.
* `overwrite = true` replaces only what a run writes (RUN_ENTRIES: its
  config, metrics, checkpoints, evaluations...); anything else in the folder
  (notes, plots, another run in a subfolder) is left in place and named. A
  subfolder holding a live run's lock refuses the overwrite.
* The old run is not deleted at start-up. Once the new run has loaded its
  model, data and reward (so a typo cannot cost the old run), the old run's
  entries move into `<out_dir>/.replaced/`. They are deleted when the new run
  writes its first checkpoint and put back if it stops before that. A
  start-up that finds `.replaced/` left by a killed process settles it
  first: deleted if that run got to a checkpoint, put back otherwise.

* SIGTERM, which cluster schedulers send some time before they kill, asks
  the run to stop once its step is done: it saves a checkpoint of that step,
  says what to run to continue, and exits with 143. A second SIGTERM stops
  at once, as Ctrl-C does.

Under torchrun only rank 0 calls these; the trainers wrap themselves in
`holds_run_dir`, which puts an old run back and releases the lock whatever
way they end, and within which SIGTERM asks for a stop.
"""

from __future__ import annotations

import fcntl
import functools
import os
import shutil
import signal
import sys
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

from grpo.run.errors import ConfigError
from grpo.run.metrics import close_open_loggers

LOCK_FILE = ".lock"
REPLACED = ".replaced"
# Written into REPLACED once every entry of the old run is in it: without it a
# start-up knows the move itself was interrupted and nothing of the new run exists yet.
SET_ASIDE_DONE = ".complete"
# What a training run writes into its folder (training_run, metrics, checkpoint), temporary files included:
# all that overwrite = true replaces.
RUN_ENTRIES = frozenset({"config.toml", "metrics.jsonl", "metrics.jsonl.tmp", "checkpoints", "final", ".final.tmp",
                         "eval", "completions", "tensorboard"})


class _Claim:
    """What this process holds on one run folder."""

    def __init__(self, lock_file):
        self.lock_file = lock_file
        self.replace_on_start = False   # overwrite = true over an existing run, not yet set aside
        self.set_aside = False          # the old run is in REPLACED


_claims: dict[Path, _Claim] = {}
_restored: set[Path] = set()    # folders whose replaced run this process put back (for `interrupted_note`)


def _key(run_dir) -> Path:
    return Path(run_dir).resolve()


def lock(run_dir) -> None:
    """Create the folder and take its lock; ConfigError naming the folder and the holder's pid if another has it.

    Then settle a `.replaced/` folder that a killed overwrite left behind.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"out_dir '{run_dir}' is a file, not a folder; choose another out_dir")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        lock_file = open(run_dir / LOCK_FILE, "a+", encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"out_dir '{run_dir}' cannot be written ({error.strerror}: '{error.filename}'); "
                          "choose another out_dir") from None
    try:
        fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock_file.seek(0)
        holder = lock_file.read().strip() or "unknown"
        lock_file.close()
        raise ConfigError(f"out_dir '{run_dir}' is in use by another run (pid {holder}); wait for it to end, "
                          "or choose another out_dir") from None
    lock_file.seek(0)
    lock_file.truncate()
    lock_file.write(f"{os.getpid()}\n")
    lock_file.flush()
    _claims[_key(run_dir)] = _Claim(lock_file)
    _restored.discard(_key(run_dir))
    _settle_interrupted_overwrite(run_dir)


def replace_on_start(run_dir) -> None:
    """Mark the old run in this folder for replacement, done by `start` once the new run can start.

    ConfigError naming the subfolder when a live run is inside this one.
    """
    refuse_live_runs_below(Path(run_dir))
    _claims[_key(run_dir)].replace_on_start = True


def start(run_dir) -> None:
    """The new run is about to write: move the old run (when replacing one) into `.replaced/`.

    Only the old run's own entries move; what else the folder holds is named and stays.
    """
    claim = _claims.get(_key(run_dir))
    if claim is None or not claim.replace_on_start:
        return
    run_dir = Path(run_dir)
    refuse_live_runs_below(run_dir)  # one may have started while the new run loaded its model
    kept = sorted(p.name for p in run_dir.iterdir() if p.name not in RUN_ENTRIES | {LOCK_FILE, REPLACED})
    if kept:
        print(f"overwrite=true replaces the run in '{run_dir}'; left in place, since no run writes them: "
              + ", ".join(kept))
    aside = run_dir / REPLACED
    aside.mkdir()
    for entry in _run_entries(run_dir):
        os.rename(entry, aside / entry.name)
    (aside / SET_ASIDE_DONE).touch()
    claim.replace_on_start, claim.set_aside = False, True


def commit(run_dir) -> None:
    """The new run has a checkpoint: the old run it replaces is deleted."""
    claim = _claims.get(_key(run_dir))
    if claim is not None and claim.set_aside:
        shutil.rmtree(Path(run_dir) / REPLACED)
        claim.set_aside = False


def release(run_dir) -> None:
    """Put a replaced run back if the new run never got to a checkpoint, then drop the lock."""
    claim = _claims.pop(_key(run_dir), None)
    if claim is None:
        return
    try:
        if claim.set_aside:
            _put_back(Path(run_dir))
            _restored.add(_key(run_dir))
            print(f"the new run in '{run_dir}' stopped before its first checkpoint: the run it was to replace "
                  "is back in place, untouched")
    finally:
        claim.lock_file.close()


def holds_run_dir(train):
    """Decorate a trainer `train(cfg)`: whatever way it ends, close its logs and release the run folder it claimed."""

    @functools.wraps(train)
    def wrapper(cfg, *args, **kwargs):
        try:
            with stop_on_sigterm():
                return train(cfg, *args, **kwargs)
        finally:
            close_open_loggers()
            release(cfg.out_dir)

    return wrapper


class Terminated(Exception):
    """The run stopped on SIGTERM after saving a checkpoint; the message says how to continue."""


_sigterm = threading.Event()


@contextmanager
def stop_on_sigterm():
    """Within the block a SIGTERM sets `sigterm_received` (the loop stops after its step); a second one stops at once.

    The first cannot stop at once: the weights may be half-way through a step,
    and a checkpoint of them would not resume exactly.
    """
    if threading.current_thread() is not threading.main_thread():  # signal handlers belong to the main thread
        yield
        return

    def handler(signum, frame):
        if _sigterm.is_set():
            raise KeyboardInterrupt
        _sigterm.set()
        print("SIGTERM: stopping once this step is done, with a checkpoint; a second SIGTERM stops at once",
              file=sys.stderr, flush=True)

    _sigterm.clear()
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        _sigterm.clear()


def sigterm_received() -> bool:
    return _sigterm.is_set()


def interrupted_note(out_dir) -> str:
    """What is true after Ctrl-C: where the run can be continued from, if anywhere."""
    from grpo.run.checkpoint import latest_checkpoint

    if _key(out_dir) in _restored:
        return (f"interrupted before the new run's first checkpoint; '{out_dir}' holds the run it was to replace, "
                "untouched. Start again with overwrite=true to replace it")
    latest = latest_checkpoint(out_dir) if Path(out_dir).is_dir() else None
    if latest is None:
        return ("interrupted before the first checkpoint: there is nothing to resume. "
                "Start again with overwrite=true")
    return f"interrupted; continue from {latest} with resume=auto"


def refuse_unwritable(folder: Path, what: str) -> None:
    """ConfigError naming `folder` when it exists and a file cannot be created in it: checked before a model loads."""
    if not folder.exists():
        return  # created inside the run folder, which the lock proved writable
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise ConfigError(f"{what} '{folder}' is not a writable folder ({error.strerror}); "
                          "remove it or make it writable, or choose another out_dir") from None


def _run_entries(run_dir: Path) -> list[Path]:
    """The entries of the folder that a run wrote (RUN_ENTRIES): what an overwrite moves aside and puts back."""
    return sorted(p for p in run_dir.iterdir() if p.name in RUN_ENTRIES)


def refuse_live_runs_below(run_dir: Path) -> None:
    """ConfigError naming the first subfolder whose run lock is held by a live process."""
    for lock_path in sorted(run_dir.rglob(LOCK_FILE)):
        if lock_path.parent == run_dir or not lock_path.is_file():
            continue
        holder = _live_holder(lock_path)
        if holder is not None:
            raise ConfigError(f"overwrite=true refused: '{lock_path.parent}' inside out_dir '{run_dir}' holds a "
                              f"run that is still going (pid {holder}); wait for it to end, or choose another out_dir")


def _live_holder(lock_path: Path) -> str | None:
    """The pid written in a run lock that a live process holds; None when nobody holds it."""
    with open(lock_path, encoding="utf-8", errors="replace") as lock_file:
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return lock_file.read().strip() or "unknown"
        fcntl.flock(lock_file, fcntl.LOCK_UN)
        return None


def _put_back(run_dir: Path) -> None:
    """Delete the new run's files (if the move had finished) and move the old run back."""
    aside = run_dir / REPLACED
    if (aside / SET_ASIDE_DONE).exists():
        for entry in _run_entries(run_dir):
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
        (aside / SET_ASIDE_DONE).unlink()
    for entry in list(aside.iterdir()):
        os.rename(entry, run_dir / entry.name)
    aside.rmdir()


def _settle_interrupted_overwrite(run_dir: Path) -> None:
    aside = run_dir / REPLACED
    if not aside.is_dir():
        return
    from grpo.run.checkpoint import latest_checkpoint

    if (aside / SET_ASIDE_DONE).exists() and latest_checkpoint(run_dir) is not None:
        shutil.rmtree(aside)  # killed after its first checkpoint, before deleting the run it replaced
        return
    _put_back(run_dir)
    print(f"'{run_dir}': a run started with overwrite=true was stopped before its first checkpoint; "
          "the run it was to replace is back in place")
