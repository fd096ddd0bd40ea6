"""What kind of filesystem a folder is on: a network share's every call is a round trip to a server,
which the walk overlaps and the daemon polls for (no change events cross the network)."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

NETWORK_FS = {
    "nfs",
    "nfs4",
    "cifs",
    "smb3",
    "smbfs",
    "fuse.sshfs",
    "sshfs",
    "9p",
    "afs",
    "fuse.rclone",
    "ncpfs",
    "davfs",
    "fuse.davfs2",
    "glusterfs",
    "ceph",
    "fuse.glusterfs",
    "afpfs",  # macOS: AFP
    "webdav",  # macOS: WebDAV
}


def filesystem_type(path: Path, mounts_file: str = "/proc/mounts") -> str:
    """The type of the filesystem holding path ('' if unknown): from the kernel's mount table on
    Linux, else (macOS, the BSDs) from what the `mount` command prints."""
    try:
        mounts = _proc_mounts(Path(mounts_file).read_text())
    except OSError:
        mounts = _mount_command() if sys.platform != "linux" else []
    target, best, fstype = os.path.realpath(path), "", ""
    for mount, kind in mounts:
        if (target == mount or target.startswith(mount.rstrip("/") + "/")) and len(mount) >= len(best):
            best, fstype = mount, kind
    return fstype


def _proc_mounts(text: str) -> list[tuple[str, str]]:
    """(mount point, type) of each line of /proc/mounts, whose spaces are written as \\040."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3:
            out.append((parts[1].replace("\\040", " "), parts[2]))
    return out


# "SOURCE on POINT (TYPE, options…)" on macOS and the BSDs; "SOURCE on POINT type TYPE (options)" elsewhere.
_MOUNT_LINE = re.compile(r"^.*? on (?P<point>/.*?) (?:type (?P<type>\S+) \(|\((?P<bsd>[^,)]+)[,)])")


def parse_mount_output(text: str) -> list[tuple[str, str]]:
    out = []
    for line in text.splitlines():
        m = _MOUNT_LINE.match(line)
        if m:
            out.append((m["point"], m["type"] or m["bsd"]))
    return out


def _mount_command() -> list[tuple[str, str]]:
    import subprocess

    try:
        done = subprocess.run(["mount"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return []
    return parse_mount_output(done.stdout)


def is_network_fs(path: Path) -> bool:
    return filesystem_type(path) in NETWORK_FS
