"""Writing a folder so that nothing half-written is ever visible, nothing good is lost, and nothing not ours is deleted.

A run works in a hidden staging folder beside its destination (``.NAME.vitzoo-staging-ID``) and owns it through a
lock file (``.NAME.vitzoo-lock-ID``) that it creates first, holds locked (``flock``) for its whole life and removes
last. The kernel drops the lock when the process dies however it dies, so "is the owner alive?" is answered by
trying the lock: right across pid namespaces and containers that share the volume, where a recorded pid means
nothing. Only a complete, verified folder is moved into place. Replacing an existing folder renames the old one
aside (``.NAME.vitzoo-old-ID``), renames the new one in, then deletes the old one, so at every instant a complete
folder (old or new) exists. A later run removes a dead run's staging and puts back an old folder that a killed
replacement had moved aside. Deletion never crosses into another filesystem (a mount point inside a folder is
refused before any work) and never follows a symbolic link; what cannot be deleted is reported, never ignored.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import signal
import socket
import stat
import time
from pathlib import Path

STAGING_TAG = ".vitzoo-staging-"
ASIDE_TAG = ".vitzoo-old-"
LOCK_TAG = ".vitzoo-lock-"


class DeletionError(OSError):
    """A folder of ours that could not be deleted whole; the message names what is left and why."""


def mount_points(folder: Path) -> list[Path]:
    """Folders inside ``folder`` (itself included) that live on another filesystem than ``folder``'s parent."""
    device = folder.parent.lstat().st_dev
    found = []
    for root, dirs, _ in os.walk(folder):  # os.walk does not follow symbolic links
        if os.lstat(root).st_dev != device:
            found.append(Path(root))
            dirs.clear()
    return found


def remove_tree(path: Path) -> None:
    """Delete a folder of ours (or a symbolic link, not what it points to). Never descends into another filesystem
    and never follows links; raises :class:`DeletionError` naming whatever could not be removed."""
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
        return
    device, entries, mounts = path.lstat().st_dev, [], []
    for root, dirs, files in os.walk(path):  # top-down, so a mount point is pruned before it is entered
        for name in list(dirs):
            child = Path(root) / name
            if not child.is_symlink() and child.lstat().st_dev != device:
                mounts.append(child)
                dirs.remove(name)
        entries += [Path(root) / name for name in dirs + files]
    problems = [f"{mount} is a mount point (another filesystem): it was not entered" for mount in mounts]
    kept = {parent for mount in mounts for parent in (mount, *mount.parents)}
    for entry in reversed([path, *entries]):  # children before their folder
        if entry in kept:
            continue
        try:
            if stat.S_ISDIR(entry.lstat().st_mode):
                entry.rmdir()
            else:
                entry.unlink()
        except FileNotFoundError:
            pass
        except OSError as error:
            problems.append(f"{entry}: {error.strerror}")
    if problems:
        raise DeletionError(f"{path} could not be deleted whole:\n  " + "\n  ".join(problems))


def _owner_info() -> str:
    """Who holds a lock, for a person reading it (the lock itself is what counts)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        pid_ns = os.readlink("/proc/self/ns/pid")
    except OSError:
        boot = pid_ns = None
    return json.dumps({"host": socket.gethostname(), "boot_id": boot, "pid_namespace": pid_ns, "pid": os.getpid()})


def _try_lock(path: Path) -> int | None:
    """An open, exclusively locked descriptor of the lock file ``path``; None while its owner lives (or if the
    file is gone)."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


class Staging:
    """A run's hidden working folder beside ``destination``, owned through a lock held until :meth:`finish` or
    :meth:`discard` (or the process's death)."""

    def __init__(self, destination: Path) -> None:
        self.destination = destination
        parent, name = destination.parent, destination.name
        while True:
            self.id = secrets.token_hex(6)
            self.lock = parent / f".{name}{LOCK_TAG}{self.id}"
            try:
                self._fd = os.open(self.lock, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
                break
            except FileExistsError:
                continue
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        os.write(self._fd, (_owner_info() + "\n").encode())
        self.path = parent / f".{name}{STAGING_TAG}{self.id}"
        self.aside = parent / f".{name}{ASIDE_TAG}{self.id}"
        try:
            self.path.mkdir(mode=0o700)
        except BaseException:
            self._release()
            raise

    def _release(self) -> None:
        self.lock.unlink(missing_ok=True)
        os.close(self._fd)

    def discard(self) -> None:
        """Remove the staging folder and the lock (the destination is left as it is)."""
        try:
            if self.path.exists():
                remove_tree(self.path)
        finally:
            self._release()

    def move_into_place(self, overwrite: bool) -> list[str]:
        """Rename the finished staging folder to the destination; an existing one only with ``overwrite``,
        atomically as seen from outside (old folder aside, new one in, old one deleted). Returns notes for the
        user (a replaced symbolic link, whose target is left as it is)."""
        destination, notes = self.destination, []
        publishable_permissions(self.path)
        if destination.exists() or destination.is_symlink():
            if not overwrite:
                raise FileExistsError(
                    f"{destination} appeared while converting; it was left as it is (pass --overwrite)."
                )
            check_replaceable(destination)
            if destination.is_symlink():
                notes.append(
                    f"replaced the symbolic link {destination} (it pointed to {os.readlink(destination)}, which was "
                    "left as it is)"
                )
            destination.rename(self.aside)
            phase("rename")
        self.path.rename(destination)
        try:
            if self.aside.exists() or self.aside.is_symlink():
                remove_tree(self.aside)
        finally:
            self._release()
        return notes


def check_replaceable(destination: Path) -> None:
    """Replacing ``destination`` deletes it: refused where that would reach another filesystem."""
    if destination.is_symlink():
        return  # the link is replaced, its target is never entered
    mounts = mount_points(destination)
    if mounts:
        raise FileExistsError(
            f"{destination} holds a mount point ({mounts[0]}): replacing the folder would delete files on another "
            "filesystem, so it was left as it is. Unmount it, or choose another --output-dir."
        )


_RUN_ENTRY = re.compile(r"\.(?P<name>.+)(?P<tag>\.vitzoo-(?:staging|old|lock)-)(?P<id>[^.]+)")


def clean_stale(destination: Path) -> list[str]:
    """Remove the staging folders of dead runs into ``destination``; put back an old folder that a killed
    replacement had moved aside. Runs whose lock is held (alive, in any namespace) are left alone. Returns what was
    done, one line each."""
    parent, done = destination.parent, []
    if not parent.is_dir():
        return done
    runs: dict[str, dict[str, Path]] = {}
    for path in parent.iterdir():
        match = _RUN_ENTRY.fullmatch(path.name)
        if match and match["name"] == destination.name:
            runs.setdefault(match["id"], {})[match["tag"]] = path
    for run_id, entries in sorted(runs.items()):
        lock = parent / f".{destination.name}{LOCK_TAG}{run_id}"
        fd = _try_lock(lock) if lock.exists() else -1
        if fd is None:
            continue  # its owner is running
        try:
            aside, staging = entries.get(ASIDE_TAG), entries.get(STAGING_TAG)
            if aside is not None:
                if not destination.exists() and not destination.is_symlink():
                    aside.rename(destination)
                    done.append(f"restored {destination.name}, moved aside by an interrupted replacement")
                else:
                    remove_tree(aside)
                    done.append(f"removed {aside.name}, left by an interrupted replacement")
            if staging is not None:
                remove_tree(staging)
                done.append(f"removed the staging folder {staging.name} of an interrupted run")
            lock.unlink(missing_ok=True)
        finally:
            if fd >= 0:
                os.close(fd)
    return done


def publishable_permissions(folder: Path) -> None:
    """0755 folders, 0644 files: a private staging folder would hide the result from other users of a machine."""
    folder.chmod(0o755)
    for path in folder.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


class _Resume(Exception):
    pass


def phase(name: str) -> None:
    """A named point of the run. Fault-injection tests set ``VITZOO_PAUSE_AT=name`` to hold the process there
    (so a signal lands in that phase, or the test changes something meanwhile); SIGUSR1 resumes it early. Otherwise
    it does nothing."""
    if os.environ.get("VITZOO_PAUSE_AT") != name:
        return

    def resume(signum, frame):
        raise _Resume

    previous = signal.signal(signal.SIGUSR1, resume)
    try:  # before the print: the resume can land as soon as the line is out, before the sleep begins
        print(f"paused at {name} (pid {os.getpid()})", flush=True)
        time.sleep(120)
    except _Resume:
        pass
    finally:
        signal.signal(signal.SIGUSR1, previous)


def exit_on_termination() -> None:
    """SIGTERM (timeout, docker stop, Slurm) unwinds like Ctrl-C, so every cleanup handler runs."""

    def handler(signum, frame):
        raise KeyboardInterrupt(f"terminated by signal {signum}")

    signal.signal(signal.SIGTERM, handler)
