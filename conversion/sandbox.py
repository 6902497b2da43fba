"""Running code we did not write (a folder's Python files) where no credential and no network can be reached.

Linux namespaces through util-linux's ``unshare``: a new user, mount, pid, network and IPC namespace. In it:
- ``/proc`` is the new pid namespace's own, so no other process (the publisher, the shell that exported
  ``HF_TOKEN``) can be seen, let alone its environment or memory;
- the network namespace has only a loopback device that is down: no connection leaves;
- the places credentials live are covered by empty filesystems: every home folder (``/root``, ``/home``, ``$HOME``),
  ``$HF_HOME`` and huggingface_hub's token file, the XDG config/cache/runtime folders, ``/tmp``, ``/var/tmp`` and
  ``/dev/shm``. Only the Python installation (``sys.prefix``, ``sys.base_prefix``, ``sys.path``) and the paths the
  caller names come back, read-only except the caller's scratch folder;
- before the code starts, every capability is dropped from the bounding set and ``no_new_privs`` is set, so it
  cannot undo those mounts or gain privileges by running a program.
The environment is the caller's to scrub (``conversion.verify.untrusted_env``). What it does not hide: files outside
the covered places that the user running it may read (as root: root's files outside them).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

# Runs inside the namespaces as their root (full capabilities there, none outside): mounts, drops, then execs.
BOOT = r"""
import ctypes, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC = 1, 2, 4, 8, 32, 4096, 16384
KEEP = {1: MS_RDONLY, 2: MS_NOSUID, 4: MS_NODEV, 8: MS_NOEXEC, 1024: 1024, 2048: 2048, 4096: 1 << 21}

def mount(source, target, fstype, flags, data=None):
    enc = lambda s: None if s is None else s.encode()
    if libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)):
        error = ctypes.get_errno()
        raise OSError(error, f"mount {source} on {target}: {os.strerror(error)}")

def cover(path):
    if os.path.isdir(path) and not os.path.islink(path):
        mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=64m")
    elif os.path.isfile(path):
        mount("/dev/null", path, None, MS_BIND)

spec = json.loads(sys.argv[1])
inside = lambda path, root: path == root or path.startswith(root.rstrip("/") + "/")
handles = {path: os.open(path, os.O_PATH) for path, _ in spec["expose"]}  # reachable after covering
for path in spec["hide"]:
    cover(path)
for path, writable in spec["expose"]:
    os.makedirs(path, exist_ok=True)
    mount(f"/proc/self/fd/{handles[path]}", path, None, MS_BIND | MS_REC)
    if not writable:  # remounting must keep the flags the original mount is locked with
        flags = os.statvfs(path).f_flag
        locked = sum(bit for flag, bit in KEEP.items() if flags & flag)
        mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | locked)
for path in spec["hide"]:  # what an exposed folder holds of the hidden places stays hidden
    if any(inside(path, exposed) and path != exposed for exposed, _ in spec["expose"]):
        cover(path)
PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 24, 38, 47, 4
for capability in range(64):
    libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0)
libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0):
    raise OSError(ctypes.get_errno(), "no_new_privs")
for handle in handles.values():
    os.close(handle)
os.chdir(spec["cwd"])
os.execv(sys.argv[2], sys.argv[2:])
"""

NAMESPACES = [
    "--user",
    "--map-root-user",
    "--mount",
    "--pid",
    "--fork",
    "--kill-child",
    "--mount-proc",
    "--net",
    "--ipc",
]


class SandboxUnavailable(RuntimeError):
    """This machine cannot isolate code (no ``unshare``, or user namespaces are disabled); the message says why."""


@functools.cache
def unavailable_reason() -> str | None:
    """None where the sandbox works here; else why not (checked once per process by starting one)."""
    if sys.platform != "linux":
        return f"isolation needs Linux namespaces; this is {sys.platform}"
    if shutil.which("unshare") is None:
        return "the unshare program (util-linux) is not installed"
    probe = sandboxed([sys.executable, "-c", "print('isolated')"], expose=[], cwd=Path("/"), check=False)
    result = subprocess.run(probe, capture_output=True, text=True, env={"PATH": os.environ.get("PATH", "")})
    if result.returncode or result.stdout.strip() != "isolated":
        return f"user namespaces are not permitted here ({(result.stderr.strip().splitlines() or ['?'])[-1]})"
    return None


def hidden_places() -> list[str]:
    """Where credentials live: every home, Hugging Face's home and token file, the XDG folders, temporary space."""
    from huggingface_hub import constants

    places = ["/root", "/home", "/tmp", "/var/tmp", "/dev/shm", "/run/user", os.path.expanduser("~")]
    places += [constants.HF_HOME, constants.HF_TOKEN_PATH, constants.HF_STORED_TOKENS_PATH]
    places += [os.environ[key] for key in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_RUNTIME_DIR") if key in os.environ]
    real = {os.path.realpath(place) for place in places if os.path.lexists(place)}
    return sorted(real, key=lambda place: (place.count("/"), place))


def python_paths() -> list[str]:
    """What the interpreter needs to start and import torch and transformers."""
    prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.path.realpath(sys.executable))}
    packages = {entry for entry in sys.path if os.path.basename(entry) in ("site-packages", "dist-packages")}
    real = {os.path.realpath(path) for path in prefixes | packages if os.path.isdir(path)}
    return sorted(path for path in real if not any(path.startswith(p + "/") for p in real))  # outermost only


def sandboxed(command: list[str], expose: list[tuple[Path, bool]], cwd: Path, check: bool = True) -> list[str]:
    """``command`` wrapped to run isolated; ``expose`` lists (path, writable) to keep visible, ``cwd`` its working
    folder (one of them). Raises :class:`SandboxUnavailable` where this machine cannot isolate."""
    if check and (reason := unavailable_reason()) is not None:
        raise SandboxUnavailable(reason)
    shown = [(path, False) for path in python_paths()] + [(str(Path(p).resolve()), w) for p, w in expose]
    spec = {"hide": hidden_places(), "expose": shown, "cwd": str(cwd.resolve())}
    return ["unshare", *NAMESPACES, sys.executable, "-c", BOOT, json.dumps(spec), *command]
