"""Which roots a command's folders are: a folder inside a known root is that part of the root, a parent
of known roots takes their files over, and a new folder becomes a root of its own."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from ingest.config import NO_CONFIG, Root, Settings, default_store
from ingest.errors import ConfigError
from ingest.globs import glob_match
from ingest.manifest import Manifest

Scopes = dict[str, tuple[str, ...]]  # root key → relative prefixes to look at ("" = all of it)


@dataclass(frozen=True)
class Adoption:
    """A known root that lies inside a root of this run: its files become the outer root's."""

    child: str
    parent: str
    prefix: str  # the child's path relative to the parent


@dataclass(frozen=True)
class Target:
    settings: Settings
    scopes: Scopes | None  # None: every root of settings, whole
    adoptions: tuple[Adoption, ...] = ()
    notes: tuple[str, ...] = field(default=())


def known(settings: Settings, manifest: Manifest, thorough: bool = False) -> dict[str, Root]:
    """Every root the configuration or the manifest knows, as it is walked: configured roots as
    configured, others as last synced. The roots of the files table are looked up (a scan of it: 0.1 s
    over 100k files) only when thorough, or when no root settings were remembered (an old manifest)."""
    remembered = manifest.remembered_roots()
    found = manifest.known_roots() if thorough or not remembered else {}
    out = {key: Root(Path(key), store) for key, store in found.items()}
    out.update({key: Root(Path(key), **how) for key, how in remembered.items()})
    out.update({r.key: r for r in settings.roots})
    return out


def owner_of(path: Path, roots: dict[str, Root]) -> Root | None:
    """The innermost known root that is `path` or holds it."""
    holding = [r for r in roots.values() if r.path == path or r.path in path.parents]
    return max(holding, key=lambda r: len(r.path.parts), default=None)


def target(
    settings: Settings,
    manifest: Manifest,
    paths: list[Path],
    store: str | None = None,
    exclude: tuple[str, ...] = (),
    typos: bool = True,
) -> Target:
    """The roots and scopes a run over PATHs works on (no PATH: the configured roots). typos: a
    configured root never synced and not there is an error (the daemon waits for it instead)."""
    roots = known(settings, manifest)
    configured = {r.key: i for i, r in enumerate(settings.roots)} if settings.source != NO_CONFIG else {}
    chosen: dict[str, Root] = {}
    scopes: dict[str, set[str]] = {}
    adoptions: list[Adoption] = []
    # Outer folders first: a folder named beside one that holds it is part of that one's scan, not a
    # root of its own (which would sync its files twice, to two stores).
    for path in sorted({Path(os.path.abspath(raw.expanduser())) for raw in paths}, key=lambda p: len(p.parts)):
        whole = owner_of(path, {k: r for k, r in chosen.items() if "" in scopes[k]})
        if whole is not None and whole.path != path:
            continue
        owner = owner_of(path, roots)
        _check_there(path, owner, roots, manifest)
        if owner is not None and owner.path != path:
            if store and store != owner.store:
                raise ConfigError(
                    f"{path} lies inside {owner.path}, which is synced to store {owner.store!r}; --store takes "
                    f"whole folders (ingest sync {owner.path} --store {store}), or route a part with [[stores]] paths"
                )
            chosen[owner.key] = owner
            scopes.setdefault(owner.key, set()).add(path.relative_to(owner.path).as_posix())
            continue
        root = owner or Root(path, store or default_store(path))
        if store and root.store != store:
            if root.key in configured:
                raise ConfigError(
                    f"{settings.source}: roots[{configured[root.key]}].store: {root.path} is configured for store "
                    f"{root.store!r}; change it there to send it to {store!r}"
                )
            root = replace(root, store=store)
        chosen[root.key] = root
        scopes.setdefault(root.key, set()).add("")
    if not paths:
        chosen = {r.key: r for r in settings.roots}
        scopes = {key: {""} for key in chosen}
        if typos:
            check_roots_there(settings, manifest)
    for key in (k for k, p in scopes.items() if "" in p):
        outer = chosen[key]
        for inner in roots.values():
            if outer.path in inner.path.parents:
                if inner.key in configured:
                    raise ConfigError(
                        f"{outer.path} holds {inner.path}, configured as roots[{configured[inner.key]}] in "
                        f"{settings.source}; make {outer.path} a root there instead of it, or sync it alone"
                    )
                adoptions.append(Adoption(inner.key, outer.key, inner.path.relative_to(outer.path).as_posix()))
    if exclude:
        if any(not glob.strip() for glob in exclude):
            raise ConfigError("--exclude needs a glob (an empty one would leave nothing out)")
        chosen = {k: replace(r, exclude=_with_excludes(r.exclude, exclude, k in configured)) for k, r in chosen.items()}
    partial = any(p != {""} for p in scopes.values())
    return Target(
        replace(settings, roots=tuple(chosen.values())),
        {k: tuple(sorted(p)) for k, p in scopes.items()} if partial else None,
        tuple(adoptions),
    )


def _with_excludes(kept: tuple[str, ...], given: tuple[str, ...], configured: bool) -> tuple[str, ...]:
    """A configured root's excludes stay, this run's join them. A folder synced without a config file
    has this run's globs instead of those remembered from an earlier one, but a folder left out
    (FOLDER/**: `ingest forget`, or an --exclude of it) stays out until synced by name."""
    held = kept if configured else tuple(g for g in kept if g.endswith("/**"))
    return tuple(dict.fromkeys((*held, *given)))


NEVER_SYNCED = "ingest has synced nothing there before: check the path"


def _check_there(path: Path, owner: Root | None, roots: dict[str, Root], manifest: Manifest) -> None:
    """A folder named for the first time must be there: a typo is an error, not a root remembered as
    missing for ever. A folder synced before that is gone now (an unmounted share, a folder deleted
    inside a root) is the run's business: held, or its deletions propagated."""
    if path.is_dir():
        return
    if path.exists():
        raise ConfigError(f"{path}: not a folder (name the folder that holds it)")
    if owner is not None and owner.path == path:
        return
    if any(path in r.path.parents for r in roots.values()):
        return  # a parent of known roots: they are held as missing
    if owner is not None and manifest.rows_under(owner.key, path.relative_to(owner.path).as_posix()):
        return
    raise ConfigError(f"{path} does not exist, and {NEVER_SYNCED}")


def check_roots_there(settings: Settings, manifest: Manifest) -> None:
    """A root that is not there and was never synced is a typo (in the config file or the command),
    not a share to wait for: one synced before is held as unmounted."""
    remembered = manifest.remembered_roots()
    for i, root in enumerate(settings.roots):
        if root.path.is_dir() or root.key in remembered or manifest.has_rows(root.key):
            continue
        what = "not a folder" if root.path.exists() else "does not exist"
        where = f"{settings.source}: roots[{i}].path: " if settings.source != NO_CONFIG else ""
        raise ConfigError(f"{where}{root.path} {what}, and {NEVER_SYNCED}")


def readmit(settings: Settings, manifest: Manifest, paths: list[Path]) -> list[str]:
    """A folder left out of a remembered root (by `ingest forget`, or a one-off --exclude of a run
    without a config file) comes back when it is synced by name: its exclusion is dropped from the
    root's remembered settings (a dry run does this in a scratch transaction). What a config file
    leaves out stays out, and is said."""
    notes: list[str] = []
    configured = {r.key: i for i, r in enumerate(settings.roots)} if settings.source != NO_CONFIG else {}
    remembered = manifest.remembered_roots()
    roots = known(settings, manifest)
    for raw in paths:
        path = Path(os.path.abspath(raw.expanduser()))
        owner = owner_of(path, roots)
        if owner is None or owner.path == path:
            continue
        prefix = path.relative_to(owner.path).as_posix()
        covering = [p for p in owner.exclude if p.endswith("/**") and _covers(p[:-3], prefix)]
        if owner.key in configured:
            notes += [
                f"{path} is left out by {p!r} in roots[{configured[owner.key]}].exclude of {settings.source}: "
                "nothing there is synced; remove it there to sync it"
                for p in covering
            ]
            continue
        how = remembered.get(owner.key)
        if how is None:
            continue
        dropped = [p for p in covering if p[:-3] == prefix]
        if dropped:
            notes.append(f"{path} is synced again: {', '.join(map(repr, dropped))} no longer left out of {owner.path}")
            how = {**how, "exclude": tuple(p for p in how["exclude"] if p not in dropped)}
            manifest.remember_roots([{"key": owner.key, **how}])
        notes += [
            f"{path} is left out by {p!r}, remembered for {owner.path}: syncing the folder it names brings it back"
            for p in covering
            if p not in dropped
        ]
    return notes


def remembered_excludes(configured: Settings, settings: Settings, given: tuple[str, ...]) -> list[str]:
    """The excludes a run applies that it was not given: remembered with a folder synced without a
    config file (a one-off --exclude, a folder forgotten inside it). Said each time, so that nothing
    is left out unseen."""
    own = {r.key for r in configured.roots} if configured.source != NO_CONFIG else set()
    notes = []
    for root in settings.roots:
        held = [p for p in root.exclude if p not in given]
        if held and root.key not in own:
            notes.append(
                f"{root.path}: leaving out {', '.join(map(repr, held))}, remembered from an earlier run; syncing "
                f"a folder by name brings it back, and a [[roots]] entry for {root.path} in a config file replaces them"
            )
    return notes


def unconfigured(configured: Settings, manifest: Manifest) -> list[str]:
    """The folders a config file no longer names whose files the manifest still holds: left in their
    stores as they were (nothing is deleted by a line removed from a file), and said each configured
    run, with what removes them."""
    if configured.source == NO_CONFIG:
        return []
    roots = {r.key: r for r in configured.roots}
    notes = []
    for key, how in sorted(manifest.remembered_roots().items()):  # every root synced: no scan of the files
        if key in roots or owner_of(Path(key), roots) is not None:
            continue
        files, store = manifest.count_in_root(key), how["store"]
        if not files:
            continue
        kept = "1 file stays" if files == 1 else f"{files} files stay"
        notes.append(
            f"{key} is no longer in {configured.source}: its {kept} in store {store!r} as they were (searches "
            f"still find them); 'ingest forget {key}' removes them"
        )
    return notes


def _covers(folder: str, prefix: str) -> bool:
    """Whether the folder pattern matches prefix or one of its parents."""
    parts = prefix.split("/")
    return any(glob_match("/".join(parts[:n]), folder) for n in range(1, len(parts) + 1))


def adopt(manifest: Manifest, adoptions: tuple[Adoption, ...]) -> int:
    """Re-key the inner roots' rows under the outer root, file ids and all; returns how many. Their
    attributes (path, folder, root) are refreshed by the run, so the fingerprint is made stale."""
    if not adoptions:
        return 0
    moved = 0
    with manifest.transaction():
        for a in adoptions:
            for row in manifest.rows_under(a.child):
                manifest.remove(row.root, row.path)
                manifest.put(replace(row, root=a.parent, path=f"{a.prefix}/{row.path}", hashed_at_ns=None))
                moved += 1
            for (_, path), how in manifest.ignores(a.child).items():
                manifest.ignore(a.parent, f"{a.prefix}/{path}", how["size"], how["mtime_ns"], how["reason"])
            manifest.forget_root(a.child)
    return moved
