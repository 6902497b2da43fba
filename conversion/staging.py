"""Writing a folder so that nothing half-written is ever visible and nothing good is ever lost.

A conversion writes into a hidden staging folder beside its destination, marked with the writing process's id;
only a complete, verified folder is moved into place. Replacing an existing folder renames the old one aside,
renames the new one in, then deletes the old one, so at every instant a complete folder (old or new) exists. A
process killed with SIGKILL leaves its staging (or the aside copy) behind: the next run in the same parent
recognises them by name and marker, removes dead staging and puts a lost old folder back. A user's own folders
never match those names.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

STAGING_TAG = ".vitzoo-staging-"
ASIDE_TAG = ".vitzoo-old-"
MARKER = ".vitzoo-staging"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner(path: Path) -> int | None:
    try:
        return int((path / MARKER).read_text().strip())
    except (OSError, ValueError):
        return None


def clean_stale(destination: Path) -> list[str]:
    """Remove staging folders of dead conversions into ``destination``'s parent; put back an old folder that a
    killed replacement had moved aside. Returns what was done, one line each."""
    parent, done = destination.parent, []
    if not parent.is_dir():
        return done
    for path in sorted(parent.iterdir()):
        if path.is_symlink() or not path.is_dir():
            continue
        if path.name.startswith(f".{destination.name}{STAGING_TAG}"):
            owner = _owner(path)
            if owner is not None and not _alive(owner):
                shutil.rmtree(path, ignore_errors=True)
                done.append(f"removed the staging folder {path.name} of an interrupted conversion")
        elif path.name.startswith(f".{destination.name}{ASIDE_TAG}"):
            pid = path.name.removeprefix(f".{destination.name}{ASIDE_TAG}")
            if not pid.isdigit() or _alive(int(pid)):
                continue
            if not destination.exists() and not destination.is_symlink():
                path.rename(destination)
                done.append(f"restored {destination.name}, moved aside by an interrupted replacement")
            else:
                shutil.rmtree(path, ignore_errors=True)
                done.append(f"removed {path.name}, left by an interrupted replacement")
    return done


def make_staging(destination: Path) -> Path:
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}{STAGING_TAG}", dir=destination.parent))
    (staging / MARKER).write_text(f"{os.getpid()}\n")
    return staging


def publishable_permissions(folder: Path) -> None:
    """0755 folders, 0644 files: mkdtemp's 0700 would hide the result from other users of a shared machine."""
    folder.chmod(0o755)
    for path in folder.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


def move_into_place(staging: Path, destination: Path, overwrite: bool) -> None:
    """Rename the finished staging folder to ``destination``; an existing one only with ``overwrite``, atomically
    as seen from outside (old folder aside, new one in, old one deleted)."""
    publishable_permissions(staging)
    if destination.exists() or destination.is_symlink():
        if not overwrite:
            raise FileExistsError(f"{destination} appeared while converting; it was left as it is (pass --overwrite).")
        aside = destination.parent / f".{destination.name}{ASIDE_TAG}{os.getpid()}"
        destination.rename(aside)
    else:
        aside = None
    phase("rename")
    staging.rename(destination)
    (destination / MARKER).unlink()  # until here the staging stayed recognisable as ours
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def phase(name: str) -> None:
    """A named point of the run. Fault-injection tests set ``VITZOO_PAUSE_AT=name`` to hold the process there
    (so a signal lands in that phase); otherwise it does nothing."""
    if os.environ.get("VITZOO_PAUSE_AT") == name:
        print(f"paused at {name}", flush=True)
        time.sleep(120)


def exit_on_termination() -> None:
    """SIGTERM (timeout, docker stop, Slurm) unwinds like Ctrl-C, so every cleanup handler runs."""

    def handler(signum, frame):
        raise KeyboardInterrupt(f"terminated by signal {signum}")

    signal.signal(signal.SIGTERM, handler)
