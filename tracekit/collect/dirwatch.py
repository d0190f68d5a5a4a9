"""A folder's new entries as a readable fd: ``inotify -> "something was added"``.

input:  a folder (the run's PID folder, where wrappers register processes)
output: a non-blocking fd that turns readable when an entry is created or
        renamed into the folder; ``drain()`` says whether one was

The collector listens to it in its sleep, beside the process events: a task
registered in the PID folder is followed at once, not at the next tick (a
task shorter than an interval would otherwise be gone, its registration
read too late). Linux inotify through libc; where it is missing, or the
folder does not exist yet, ``DirWatch.open`` returns None and the folder is
looked at each tick as before.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct
from pathlib import Path

_IN_NONBLOCK = 0o4000
_IN_CLOEXEC = 0o2000000
_IN_CLOSE_WRITE = 0x00000008
_IN_MOVED_TO = 0x00000080
_IN_CREATE = 0x00000100
_IN_DELETE_SELF = 0x00000400
_IN_MOVE_SELF = 0x00000800
_IN_IGNORED = 0x00008000  # the watch was removed (its folder deleted, or unmounted)
_EVENT = struct.Struct("=iIII")  # wd, mask, cookie, len


def _libc():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None


class DirWatch:
    """An inotify watch of one folder; ``close()`` when done."""

    def __init__(self, fd: int, path: Path):
        self._fd = fd
        self.path = path
        self.gone = False

    @classmethod
    def open(cls, path: Path) -> DirWatch | None:
        libc = _libc()
        if libc is None or not hasattr(libc, "inotify_init1"):
            return None
        fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if fd < 0:
            return None
        mask = _IN_CLOSE_WRITE | _IN_MOVED_TO | _IN_CREATE | _IN_DELETE_SELF | _IN_MOVE_SELF
        if libc.inotify_add_watch(fd, os.fsencode(path), mask) < 0:  # ENOENT: not made yet
            os.close(fd)
            return None
        return cls(fd, path)

    def fileno(self) -> int:
        return self._fd

    def drain(self) -> bool:
        """Whether anything happened in the folder since the last drain (never blocks). ``gone`` turns
        True once the folder itself was removed or moved away: the watch then sees nothing more."""
        changed = False
        while True:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                return changed
            if not data:
                return changed
            changed = True
            offset = 0
            while offset + _EVENT.size <= len(data):  # struct inotify_event, then its name (len bytes)
                _wd, mask, _cookie, name_len = _EVENT.unpack_from(data, offset)
                self.gone = self.gone or bool(mask & (_IN_DELETE_SELF | _IN_MOVE_SELF | _IN_IGNORED))
                offset += _EVENT.size + name_len

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
