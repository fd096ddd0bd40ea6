"""One writer at a time: an advisory lock beside the manifest, shared by sync, watch and reindex."""

from __future__ import annotations

import fcntl
import os
import re
import time
from pathlib import Path

from ingest.errors import LockBusy as LockBusy
from ingest.errors import ManifestError


class ManifestLock:
    def __init__(self, manifest: Path, command: str):
        self.path = Path(str(manifest) + ".lock")
        self.command = command
        self._fd: int | None = None

    def holder(self) -> str:
        try:
            return self.path.read_text().strip() or "another ingest process"
        except OSError:
            return "another ingest process"

    def holder_pid(self) -> int | None:
        found = re.search(r"\(pid (\d+)\)", self.holder())
        return int(found.group(1)) if found else None

    def live_holder(self) -> int | None:
        """The pid of the process holding the lock, if one does and it is alive (a read: never taken)."""
        pid = self.holder_pid()  # release() empties the file; a killed holder leaves its pid behind
        if pid is None:
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass  # another user's process: alive
        return pid

    def acquire(self, wait: float = 0.0) -> ManifestLock:
        """Take the lock; wait up to `wait` seconds (0: fail at once, negative: forever)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise ManifestError(
                f"{self.path}: cannot create the lock beside the manifest ({exc.strerror}); "
                "make that folder writable by this user, or run ingest as the user that "
                "owns it"
            ) from None
        deadline = None if wait < 0 else time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    holder = self.holder()
                    os.close(fd)
                    raise LockBusy(
                        f"the manifest is in use by {holder}; wait for it to finish, or pass --wait to queue behind it"
                    ) from None
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.write(fd, f"'ingest {self.command}' (pid {os.getpid()})\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> ManifestLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()
