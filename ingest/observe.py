"""The one "has this file changed?" rule: a stat fingerprint (size, mtime_ns, inode) vouches for the
last hash unless the hash was taken within the racy window of the mtime; on network shares the inode
is no identity and the window is wider. The scan, the manifest's query for settled rows and the
survey all decide by what is here (dvc-data's state, git's and borg's "racy clean")."""

from __future__ import annotations

import os
from typing import Protocol


class Stat(Protocol):
    @property
    def size(self) -> int: ...
    @property
    def mtime_ns(self) -> int: ...
    @property
    def inode(self) -> int: ...


# A file modified this close to the moment it was hashed may change again within the same
# mtime tick ("racy clean"): hash it again next time. SMB rounds mtimes, so it gets more.
RACY_NS = 2_000_000_000
RACY_NS_NETWORK = 3_000_000_000

# A manifest row a no-op pass may trust by stat alone: indexed, nothing pending, hashed outside the
# racy window of its mtime. Parameters: the indexed state, then racy_ns(network).
SETTLED_SQL = (
    "state = ? and file_id is not null and old_file_id is null and old_vector_store_id is null "
    "and hashed_at_ns is not null and mtime_ns < hashed_at_ns - ?"
)


def racy_ns(network: bool) -> int:
    return RACY_NS_NETWORK if network else RACY_NS


def inode_of(st: os.stat_result, network: bool) -> int:
    """0 where the inode is not a stable identity (network filesystems): it then never decides."""
    return 0 if network else st.st_ino


def same_stat(known: tuple, size: int, mtime_ns: int, inode: int) -> bool:
    """Whether a stat matches a known (size, mtime_ns, inode, …) fingerprint; an inode of 0 on either
    side is unknown and matches any."""
    return known[0] == size and known[1] == mtime_ns and (not inode or not known[2] or known[2] == inode)


def digest_context(store: str, network: bool) -> str:
    """What a folder digest was taken under besides the files: the root's store, and whether it is a share
    (which sets the racy window and leaves inodes out)."""
    return repr((store, network))


def folder_digest(context: str, seen: list[tuple[str, int, int, int]]) -> str:
    """A folder's fingerprint: every wanted file's (path, size, mtime_ns, inode), in listing order, under
    the root's context (its store, whether it is a share). A folder whose digest equals the one recorded
    when each of its files had a settled row, and whose rows are unchanged since, is unchanged by the
    rule above without reading a row. 16 bytes of BLAKE2b: two listings that differ never meet by chance."""
    from array import array
    from hashlib import blake2b  # here: only a pass with recorded digests pays for it

    digest = blake2b(context.encode("utf-8", "surrogatepass"), digest_size=16)
    if seen:
        paths, sizes, mtimes, inodes = zip(*seen, strict=True)  # columns: each packed in one call
        digest.update(b"\0" + "\0".join(paths).encode("utf-8", "surrogatepass") + b"\0")
        digest.update(array("q", sizes).tobytes() + array("q", mtimes).tobytes() + array("Q", inodes).tobytes())
    return digest.hexdigest()


def needs_hash(
    entry: Stat,
    size: int | None,
    mtime_ns: int | None,
    inode: int | None,
    hashed_at_ns: int | None,
    network: bool = False,
) -> bool:
    """True when the stat fingerprint moved, or the last hash was taken too close to the mtime."""
    if size is None or hashed_at_ns is None:
        return True
    if not same_stat((size, mtime_ns, inode), entry.size, entry.mtime_ns, entry.inode):
        return True
    return entry.mtime_ns >= hashed_at_ns - racy_ns(network)
