"""Folders and stores over time, end to end on both backends: forget, overlapping folders, files moving
between stores, exclusions, ls, status, ignore, sync --store, interrupted runs and filters."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest

import ingest
from ingest.errors import ConfigError
from ingest.manifest import FAILED, INDEXED, Manifest
from ingest.remote.base import NotFound
from tests.conftest import Cli
from tests.test_watch import until

BASE = "request_timeout = 5\nindex_timeout = 30\n"


class World:
    """One backend as a user meets it: the CLI, and what the manifest and the remote hold."""

    def __init__(self, kind: str, state_dir: Path, tmp_path: Path, emu=None):
        self.kind, self.state_dir, self.tmp_path, self.emu = kind, state_dir, tmp_path, emu
        self.cli = Cli()
        self.config_file = tmp_path / "ingest.toml"
        self.config("")

    def config(self, text: str) -> None:
        self.config_file.write_text(BASE + text)

    def manifest(self) -> Manifest:
        return Manifest(self.state_dir / ("manifest.db" if self.kind == "openai" else "local/manifest.db"))

    def rows(self) -> dict[str, object]:
        m = self.manifest()
        try:
            return {os.path.join(r.root, r.path): r for r in m.rows().values()}
        finally:
            m.close()

    def stores(self) -> dict[str, list[str]]:
        """Logical store → vector store ids, as the manifest has them (active only)."""
        m = self.manifest()
        try:
            out: dict[str, list[str]] = {}
            for s in m.stores():
                out.setdefault(s.name, []).append(s.id)
            return out
        finally:
            m.close()

    def store_files(self, store_id: str) -> dict[str, str]:
        """path attribute → file id, of the files attached to a vector store."""
        if self.emu is not None:
            return {sf["attributes"]["path"]: sf["id"] for sf in self.emu.store_files(store_id)}
        from ingest.remote.local import LocalRemote

        remote = LocalRemote(self.state_dir / "local" / "store")
        try:
            return {sf.attributes["path"]: sf.file_id for sf in remote.list_store_files(store_id)}
        finally:
            remote.close()

    def store_exists(self, store_id: str) -> bool:
        if self.emu is not None:
            return store_id in {s["id"] for s in self.emu.stores()}
        from ingest.remote.local import LocalRemote

        remote = LocalRemote(self.state_dir / "local" / "store")
        try:
            remote.get_store(store_id)
            return True
        except NotFound:
            return False
        finally:
            remote.close()

    def store_name(self, store_id: str) -> str:
        if self.emu is not None:
            return self.emu.store(store_id)["name"]
        from ingest.remote.local import LocalRemote

        remote = LocalRemote(self.state_dir / "local" / "store")
        try:
            return remote.get_store(store_id).name
        finally:
            remote.close()

    def file_ids(self) -> set[str]:
        """Every file the remote holds: a re-upload shows as a new id."""
        if self.emu is not None:
            return {f["id"] for f in self.emu.files()}
        from ingest.remote.local import LocalRemote

        remote = LocalRemote(self.state_dir / "local" / "store")
        try:
            return {f.id for f in remote.list_files()}
        finally:
            remote.close()

    def runs(self) -> list[dict]:
        m = self.manifest()
        try:
            return m.recent_runs(20)
        finally:
            m.close()


@pytest.fixture(params=["local", "openai"])
def world(request, state_dir, tmp_path, monkeypatch) -> World:
    if request.param == "local":
        return World("local", state_dir, tmp_path)
    from tests.emulator import Emulator

    emu = Emulator(index_delay=0.05, poll_after_ms=20).start()
    request.addfinalizer(emu.stop)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-key-0123456789")
    monkeypatch.setenv("OPENAI_BASE_URL", emu.base_url)
    return World("openai", state_dir, tmp_path, emu)


@pytest.fixture
def share(tmp_path) -> Path:
    root = tmp_path / "share"
    for rel, text in {
        "intro.md": "# Intro\n\nThe lighthouse keeper logs the weather.\n",
        "notes/a.md": "Notes on the albatross migration.\n",
        "notes/b.txt": "Notes on the basking shark season.\n",
        "guides/install.md": "# Install\n\nRun the zebrafish installer.\n",
    }.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def ids_by_path(world: World) -> dict[str, str]:
    return {p: r.file_id for p, r in world.rows().items()}


# 1. forget ----------------------------------------------------------------------------------------
def test_forget_a_deleted_folder_takes_back_its_files_and_store(world, share):
    world.cli("sync", str(share))
    (store_id,) = world.stores()["share"]
    before = world.file_ids()
    assert len(before) == 4 and len(world.store_files(store_id)) == 4
    shutil.rmtree(share)
    assert world.cli("verify", check=1).exit_code == 1

    plan = world.cli.json("forget", str(share), "--dry-run")
    assert plan["counts"] == {"deleted": 4, "stores_removed": 1} and plan["stores_removed"] == ["share"]
    assert world.file_ids() == before and len(world.rows()) == 4, "a dry run changes nothing"

    done = world.cli.json("forget", str(share))
    assert done["counts"] == {"deleted": 4, "stores_removed": 1} and done["exit_code"] == 0
    assert world.rows() == {} and world.stores() == {}
    assert not (world.file_ids() & before), "ingest's remote files are deleted"
    assert not world.store_exists(store_id), "the store it left empty is deleted"
    world.cli("verify")
    world.cli("reindex")


def test_forget_keep_store_and_a_folder_inside_a_root(world, share):
    world.cli("sync", str(share))
    (store_id,) = world.stores()["share"]
    ids = ids_by_path(world)
    done = world.cli.json("forget", str(share / "notes"), "--keep-store")
    assert sorted(done["deleted"]) == [str(share / "notes/a.md"), str(share / "notes/b.txt")]
    assert done["stores_removed"] == []
    assert set(world.store_files(store_id)) == {"intro.md", "guides/install.md"}
    assert set(world.rows()) == {str(share / "intro.md"), str(share / "guides/install.md")}
    assert ids[str(share / "notes/a.md")] not in world.file_ids()
    # The folder is still there: the root's next run leaves it out rather than uploading it again.
    again = world.cli.json("sync", str(share))
    assert again["counts"]["new"] == 0 and again["counts"]["uploaded"] == 0
    assert set(world.store_files(store_id)) == {"intro.md", "guides/install.md"}
    world.cli("verify")


def test_forget_a_folder_ingest_does_not_know_is_an_error(world, share, tmp_path):
    world.cli("sync", str(share))
    result = world.cli("forget", str(tmp_path / "elsewhere"), check=2)
    assert "ingest syncs no folder there" in result.stderr and str(share) in result.stderr
    assert len(world.rows()) == 4


def test_a_folder_forgotten_inside_a_root_stays_out_until_synced_by_name(world, share):
    world.cli("sync", str(share))
    done = world.cli.json("forget", str(share / "notes"))
    (note,) = done["notes"]
    assert "left out of" in note and f"ingest sync {share / 'notes'}" in note and "configured" not in note
    assert world.cli.json("sync", str(share))["counts"]["new"] == 0, "kept out, as the note says"
    plan = world.cli.json("sync", str(share / "notes"), "--dry-run")
    assert plan["counts"]["new"] == 2
    back = world.cli.json("sync", str(share / "notes"))
    assert back["counts"]["new"] == 2 and any("synced again" in n for n in back["notes"])
    again = world.cli.json("sync", str(share))
    assert again["counts"]["new"] == 0 and again["counts"]["unchanged"] == 4, "and it stays back"


def test_a_folder_the_config_file_excludes_says_so_when_synced_by_name(world, share):
    world.config(f'[[roots]]\npath = "{share}"\n')
    world.cli("sync")
    done = world.cli.json("forget", str(share / "notes"))
    (note,) = done["notes"]
    assert 'add "notes/**" to roots[0].exclude in ingest.toml' in note
    world.config(f'[[roots]]\npath = "{share}"\nexclude = ["notes/**"]\n')
    report = world.cli.json("sync", str(share / "notes"))
    assert report["counts"]["new"] == 0
    assert any("roots[0].exclude of ingest.toml" in n for n in report["notes"])


def test_a_folder_that_is_not_there_is_an_error_unless_synced_before(world, share, tmp_path):
    typo = tmp_path / "shrae"
    result = world.cli("sync", str(typo), check=2)
    assert f"{typo} does not exist" in result.stderr
    with pytest.raises(ConfigError, match="does not exist"):
        ingest.sync(typo)
    assert "folders missing" not in world.cli("status").stdout, "the typo is not remembered"
    world.cli("verify")
    world.cli("sync", str(share))
    shutil.rmtree(share)  # an unmounted share: held, nothing deleted
    held = world.cli.json("sync", str(share), check=1)
    assert held["counts"]["held"] == 4 and len(world.rows()) == 4


# 2. overlapping folders ---------------------------------------------------------------------------
def test_a_folder_inside_a_known_root_syncs_that_part_of_it(world, share):
    world.cli("sync", str(share))
    ids, stores, files = ids_by_path(world), world.stores(), world.file_ids()
    (share / "notes" / "a.md").write_text("Notes on the albatross, revised.\n")
    (share / "intro.md").write_text("An edit outside the folder synced.\n")
    report = world.cli.json("sync", str(share / "notes"))
    assert report["counts"]["changed"] == 1 and report["counts"]["uploaded"] == 1
    assert report["counts"]["scanned"] == 2, "only the part of the root that was named"
    assert world.stores() == stores, "no second store"
    rows = world.rows()
    assert set(rows) == set(ids), "the files stay rows of the root"
    assert rows[str(share / "notes/b.txt")].file_id == ids[str(share / "notes/b.txt")]
    assert rows[str(share / "intro.md")].file_id == ids[str(share / "intro.md")], "outside: not synced yet"
    assert len(world.file_ids() - files) == 1
    assert set(world.store_files(stores["share"][0])) == {"intro.md", "notes/a.md", "notes/b.txt", "guides/install.md"}


def test_a_parent_of_a_known_root_adopts_its_files_with_their_ids(world, share):
    world.cli("sync", str(share / "notes"))
    (notes_store,) = world.stores()["notes"]
    notes_ids = set(ids_by_path(world).values())
    plan = world.cli.json("sync", str(share), "--dry-run")
    # The adopted files keep their ids and take new path attributes: an update each, as the run does.
    assert (plan["counts"]["new"], plan["counts"]["attributes"], plan["counts"]["unchanged"]) == (2, 2, 0), plan
    assert "store 'notes' would be renamed to 'share' in place" in plan["notes"]
    assert set(ids_by_path(world).values()) == notes_ids and str(share) not in {r.root for r in world.rows().values()}
    assert world.stores() == {"notes": [notes_store]}, "a dry run keeps nothing"

    report = world.cli.json("sync", str(share))
    assert report["counts"]["new"] == 2 and report["counts"]["uploaded"] == 2 and report["counts"]["moved_store"] == 0
    assert (report["counts"]["attributes"], report["counts"]["unchanged"]) == (2, 0), "as the plan said"
    rows = world.rows()
    assert {rows[str(share / p)].file_id for p in ("notes/a.md", "notes/b.txt")} == notes_ids
    assert {r.root for r in rows.values()} == {str(share)} and all(r.state == INDEXED for r in rows.values())
    assert world.stores() == {"share": [notes_store]}, "no second store: the folder's store is renamed"
    remote = world.store_files(notes_store)
    assert set(remote) == {"intro.md", "guides/install.md", "notes/a.md", "notes/b.txt"}, "path attributes follow"
    assert {remote["notes/a.md"], remote["notes/b.txt"]} == notes_ids, "the same files, not copies"
    assert world.store_name(notes_store) == "share"
    world.cli("verify")


def test_a_parent_of_two_known_roots_renames_one_store_and_moves_the_other_in_one_run(world, share):
    world.cli("sync", str(share / "notes"), str(share / "guides"))  # two stores: notes (2 files), guides (1)
    stores = world.stores()
    (notes_store,) = stores["notes"]
    assert set(stores) == {"notes", "guides"}
    before = ids_by_path(world)
    plan = world.cli.json("sync", str(share), "--dry-run")
    renames = [n for n in plan["notes"] if "renamed to 'share'" in n]
    assert renames == ["store 'notes' would be renamed to 'share' in place"], plan["notes"]

    report = world.cli.json("sync", str(share))  # one run, no error
    counts = report["counts"]
    assert counts["moved_store"] == 1 and counts["new"] == 1 and counts["uploaded"] == 1, counts
    assert world.stores()["share"] == [notes_store], "the larger store is renamed"
    assert "guides" not in world.stores() or not world.store_files(world.stores()["guides"][0]), "emptied"
    remote = world.store_files(notes_store)
    assert set(remote) == {"intro.md", "guides/install.md", "notes/a.md", "notes/b.txt"}
    assert remote["guides/install.md"] == before[str(share / "guides/install.md")], "moved, not uploaded again"
    world.cli("verify")


def test_a_parent_sent_to_an_existing_store_takes_the_files_over_make_before_break(world, share, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "x.md").write_text("Another folder already in the library.\n")
    world.cli("sync", str(other), "--store", "library")
    world.cli("sync", str(share / "notes"))
    (notes_store,) = world.stores()["notes"]
    notes_ids = set(ids_by_path(world).values()) - {ids_by_path(world)[str(other / "x.md")]}
    files = world.file_ids()
    report = world.cli.json("sync", str(share), "--store", "library")
    assert report["counts"]["moved_store"] == 2 and report["counts"]["uploaded"] == 2
    assert len(world.file_ids() - files) == 2, "only the two files new to ingest are uploaded"
    (library,) = world.stores()["library"]
    remote = world.store_files(library)
    assert {remote["notes/a.md"], remote["notes/b.txt"]} == notes_ids and "x.md" in remote
    assert world.store_files(notes_store) == {}, "detached from the old store once indexed in the new"
    assert any("'notes' is empty" in n for n in report["notes"])
    world.cli("store", "remove", "notes")
    assert not world.store_exists(notes_store) and set(world.stores()) == {"library"}
    world.cli("verify")


def test_a_configured_parent_adopts_a_folder_synced_without_the_config(world, share):
    world.cli("sync", str(share / "notes"))
    ids, files = ids_by_path(world), world.file_ids()
    world.config(f'[[roots]]\npath = "{share}"\nstore = "notes"\n')
    report = world.cli.json("sync")
    counts = report["counts"]
    assert (counts["uploaded"], counts["attributes"], counts["unchanged"]) == (2, 2, 0), "its path attribute changes"
    assert len(world.file_ids() - files) == 2
    rows = world.rows()
    assert {rows[str(share / "notes/a.md")].file_id, rows[str(share / "notes/b.txt")].file_id} == set(ids.values())
    (vs,) = world.stores()["notes"]
    assert set(world.store_files(vs)) == {"intro.md", "guides/install.md", "notes/a.md", "notes/b.txt"}
    world.cli("verify")


def test_a_folder_dropped_from_the_config_keeps_its_files_and_each_run_says_so(world, share):
    notes, guides = share / "notes", share / "guides"
    world.config(f'[[roots]]\npath = "{notes}"\n\n[[roots]]\npath = "{guides}"\n')
    world.cli("sync")
    kept = {p: r.file_id for p, r in world.rows().items() if p.startswith(str(guides))}
    assert kept
    quiet = world.cli.json("sync")
    assert not [n for n in quiet["notes"] if "no longer in" in n], "both folders configured: nothing to say"
    world.config(f'[[roots]]\npath = "{notes}"\n')
    report = world.cli.json("sync")
    said = [n for n in report["notes"] if "no longer in" in n]
    assert said == [
        f"{guides} is no longer in {world.config_file.name}: its 1 file stays in store 'guides' as they were "
        f"(searches still find them); 'ingest forget {guides}' removes them"
    ]
    assert {p: r.file_id for p, r in world.rows().items() if p.startswith(str(guides))} == kept, "nothing deleted"
    (vs,) = world.stores()["guides"]
    assert set(world.store_files(vs)) == {"install.md"}
    assert "no longer in" not in world.cli("sync", str(notes)).stdout, "a folder named: the others are not dropped"
    world.cli("forget", str(guides))
    assert not [n for n in world.cli.json("sync")["notes"] if "no longer in" in n]


def test_two_configured_roots_that_overlap_are_a_config_error(world, share):
    world.config(f'[[roots]]\npath = "{share}"\n[[roots]]\npath = "{share / "notes"}"\nstore = "n"\n')
    result = world.cli("sync", check=2)
    assert "ingest.toml: " in result.stderr
    assert "roots[1].path" in result.stderr and "roots[0].path" in result.stderr
    assert world.rows() == {} and world.file_ids() == set()


# 3. files moving between stores -------------------------------------------------------------------
def test_a_route_moves_files_with_their_ids_make_before_break(world, share):
    world.config(f'[[roots]]\npath = "{share}"\nstore = "kb"\n')
    world.cli("sync")
    ids, files = ids_by_path(world), world.file_ids()
    (kb,) = world.stores()["kb"]
    world.config(f'[[roots]]\npath = "{share}"\nstore = "kb"\n[[stores]]\nname = "guides"\npaths = ["guides/**"]\n')
    plan = world.cli.json("sync", "--dry-run")
    assert plan["counts"]["moved_store"] == 1 and plan["plan"]["moved_store"] == [
        f"{share / 'guides/install.md'}: kb -> guides"
    ]
    report = world.cli.json("sync")
    assert report["counts"]["moved_store"] == 1 and report["counts"]["uploaded"] == 0
    assert world.file_ids() == files, "nothing uploaded again"
    (guides,) = world.stores()["guides"]
    assert world.store_files(guides) == {"guides/install.md": ids[str(share / "guides/install.md")]}
    assert "guides/install.md" not in world.store_files(kb)
    row = world.rows()[str(share / "guides/install.md")]
    assert row.store == "guides" and row.vector_store_id == guides and row.old_vector_store_id is None
    world.cli("verify")


def test_a_store_renamed_in_the_config_is_renamed_in_place(world, share):
    world.config(f'[[roots]]\npath = "{share}"\nstore = "kb"\n')
    world.cli("sync")
    ids, files = ids_by_path(world), world.file_ids()
    (kb,) = world.stores()["kb"]
    world.config(f'[[roots]]\npath = "{share}"\nstore = "handbook"\n')
    plan = world.cli.json("sync", "--dry-run")
    assert "store 'kb' would be renamed to 'handbook' in place" in plan["notes"]
    report = world.cli.json("sync")
    assert report["counts"]["uploaded"] == 0 and report["counts"]["moved_store"] == 0
    assert world.stores() == {"handbook": [kb]} and world.store_name(kb) == "handbook"
    assert world.file_ids() == files and ids_by_path(world) == ids
    assert {r.store for r in world.rows().values()} == {"handbook"}
    world.cli("verify")


def test_store_rename_command(world, share):
    world.cli("sync", str(share))
    (vs,) = world.stores()["share"]
    files = world.file_ids()
    world.cli("store", "rename", "share", "library")
    assert world.stores() == {"library": [vs]} and world.store_name(vs) == "library"
    again = world.cli.json("sync", str(share))
    assert again["counts"]["unchanged"] == 4 and world.file_ids() == files and world.stores() == {"library": [vs]}
    assert world.cli("store", "rename", "nope", "x", check=2).stderr.count("no store named 'nope'") == 1
    same = world.cli("store", "rename", "library", "library", check=2).stderr
    assert "called 'library' already" in same and "remove it" not in same


# 4. excluded is not deleted -----------------------------------------------------------------------
def test_files_a_config_change_excludes_are_reported_as_excluded(world, share):
    world.config(f'[[roots]]\npath = "{share}"\nstore = "kb"\n')
    world.cli("sync")
    (kb,) = world.stores()["kb"]
    world.config(f'[[roots]]\npath = "{share}"\nstore = "kb"\nexclude = ["notes/a.md"]\n')
    plan = world.cli.json("sync", "--dry-run")
    assert plan["counts"]["excluded"] == 1 and plan["counts"]["deleted"] == 0
    assert plan["plan"]["excluded"] == [str(share / "notes/a.md")]
    assert "1 excluded" in world.cli("sync", "--dry-run").stdout, "said in the text summary too"
    report = world.cli.json("sync")
    assert report["counts"]["excluded"] == 1 and report["counts"]["deleted"] == 0
    assert "notes/a.md" not in world.store_files(kb) and str(share / "notes/a.md") not in world.rows()
    world.config(
        f'max_delete_floor = 1\n[[roots]]\npath = "{share}"\nstore = "kb"\nexclude = ["notes/**", "guides/**"]\n'
    )
    guarded = world.cli.json("sync")
    assert guarded["counts"]["excluded"] == 0 and guarded["counts"]["held"] == 2
    assert all("excluded by the configuration" in h["reason"] for h in guarded["held_back"])
    assert len(world.store_files(kb)) == 3, "the guard kept them"
    allowed = world.cli.json("sync", "--allow-mass-delete")
    assert allowed["counts"]["excluded"] == 2 and set(world.store_files(kb)) == {"intro.md"}


def test_sync_exclude_glob(world, share):
    world.cli("sync", str(share))
    (vs,) = world.stores()["share"]
    report = world.cli.json("sync", str(share), "--exclude", "notes/**")
    assert report["counts"]["excluded"] == 2
    assert set(world.store_files(vs)) == {"intro.md", "guides/install.md"}
    again = world.cli.json("sync", str(share))
    assert again["counts"]["new"] == 0, "a run without the config keeps the root's excludes"
    assert any("leaving out 'notes/**', remembered" in n for n in again["notes"]), "and says so"
    txt = world.cli.json("sync", str(share), "--exclude", "*.txt", "--exclude", "*.txt")
    assert txt["counts"]["new"] == 0 and txt["counts"]["excluded"] == 0, "the folder left out stays out"
    md = world.cli.json("sync", str(share), "--exclude", "intro.md")
    assert md["counts"]["excluded"] == 1 and md["counts"]["new"] == 0, "another --exclude replaces the globs"
    assert set(world.store_files(vs)) == {"guides/install.md"}
    last = world.cli.json("sync", str(share))
    assert [n for n in last["notes"] if "leaving out" in n] == [
        f"{share}: leaving out 'notes/**', 'intro.md', remembered from an earlier run; syncing a folder by name"
        f" brings it back, and a [[roots]] entry for {share} in a config file replaces them"
    ], "remembered once each"
    refused = world.cli("sync", str(share), "--exclude", "", check=2)
    assert "--exclude needs a glob" in refused.stderr


# 5. config mistakes -------------------------------------------------------------------------------
def test_a_stores_entry_nothing_uses_is_an_error_naming_file_and_key(world, share):
    world.config(f'[[roots]]\npath = "{share}"\nstore = "handbok"\n[[stores]]\nname = "handbook"\nmax_files = 5\n')
    result = world.cli("sync", check=2)
    assert "ingest.toml: " in result.stderr and "stores[0].name" in result.stderr
    assert "roots[0].store = 'handbok'" in result.stderr
    assert world.rows() == {} and world.file_ids() == set()


# 6. ls ----------------------------------------------------------------------------------------------
def test_ls_lists_the_files_ingest_knows(world, share):
    world.cli("sync", str(share))
    rows = world.rows()
    listed = world.cli.json("ls")
    assert {f["path"] for f in listed} == set(rows)
    one = next(f for f in listed if f["path"] == str(share / "intro.md"))
    assert one["store"] == "share" and one["state"] == INDEXED and one["file_id"] == rows[one["path"]].file_id
    assert one["size"] == (share / "intro.md").stat().st_size and one["synced_at"]
    assert one["file_id"] in world.file_ids()
    assert {f["path"] for f in world.cli.json("ls", str(share / "notes"))} == {
        str(share / "notes/a.md"),
        str(share / "notes/b.txt"),
    }
    assert world.cli.json("ls", "--state", "failed") == []
    assert "no store named 'other'" in world.cli("ls", "--store", "other", check=2).stderr
    assert str(share / "guides/install.md") in world.cli("ls").stdout


# 7. status --------------------------------------------------------------------------------------------
def test_status_shows_folders_config_and_local_changes(world, share):
    world.config(f'[[roots]]\npath = "{share}"\nstore = "kb"\n')
    world.cli("sync")
    (share / "intro.md").write_text("changed\n")
    (share / "new.md").write_text("new\n")
    (share / "notes" / "b.txt").unlink()
    data = world.cli.json("status")
    assert data["config"] == str(world.config_file)
    assert data["local_changes"] == {"new": 1, "changed": 1, "deleted": 1, "unreachable_roots": 0}
    (kb,) = [s for s in data["stores"] if s["name"] == "kb"]
    assert kb["folders"] == [str(share)] and kb["files"] == {INDEXED: 4}
    assert kb["vector_store_ids"] == world.stores()["kb"] and len(world.store_files(kb["vector_store_ids"][0])) == 4
    text = world.cli("status").stdout
    assert f"from: {share}" in text and "local changes not synced yet: 3" in text


# 8. ignore --------------------------------------------------------------------------------------------
def too_large_to_index(world: World, share: Path, monkeypatch) -> Path:
    """A file both stores refuse for good (over their token limit, lowered here), after a sync."""
    big = share / "huge.txt"
    big.write_text("word " * 400)
    if world.emu is not None:
        world.emu.configure(max_file_tokens=200)
    else:
        monkeypatch.setattr("ingest.remote.local.prepare.MAX_FILE_TOKENS", 200)  # counted where files are extracted
    world.cli("sync", str(share), check=1)
    return big


def test_ignore_quiets_a_permanent_failure_until_the_file_changes(world, share, monkeypatch):
    big = too_large_to_index(world, share, monkeypatch)
    assert world.rows()[str(big)].state == FAILED
    assert world.cli("verify", check=1).exit_code == 1
    done = world.cli.json("ignore", str(big))
    assert done[0]["changed"] and "too large" in done[0]["reason"]
    world.cli("verify")
    world.cli("reindex")
    counts = world.cli.json("sync", str(share))["counts"]
    assert counts["ignored"] == 1 and counts["scanned"] == counts["unchanged"] + 1, "an ignored file was seen"
    status = world.cli.json("status")
    assert [i["path"] for i in status["ignored"]] == [str(big)]
    assert str(big) not in [p["path"] for p in status["problems"]], "acknowledged: not a problem any more"
    row = world.rows()[str(big)]
    assert row.state == FAILED, "acknowledged, not repaired: the record still says what happened"
    assert row.file_id in world.store_files(row.vector_store_id).values(), "the remote is left as it is"
    big.write_text("small now\n")
    report = world.cli.json("sync", str(share))
    assert report["counts"]["changed"] + report["counts"]["resumed"] >= 1 and report["exit_code"] == 0
    assert world.rows()[str(big)].state == INDEXED and world.cli.json("status")["ignored"] == []
    world.cli("ignore", "--undo", str(big))


def test_ignore_names_files_not_folders_whether_a_root_or_inside_one(world, share):
    world.cli("sync", str(share))
    for folder in (share, share / "notes"):
        refused = world.cli("ignore", str(folder), check=2)
        assert f"{folder}: a folder; ignore names files" in refused.stderr


def test_nothing_is_ignored_implicitly_and_undo_looks_again(world, share, monkeypatch):
    big = too_large_to_index(world, share, monkeypatch)
    world.cli("verify", check=1)
    world.cli("verify", check=1)  # the second night too: nothing was acknowledged
    world.cli("ignore", str(big))
    world.cli("verify")
    world.cli("ignore", "--undo", str(big))
    world.cli("verify", check=1)


def test_ignore_refuses_a_healthy_file_by_name_and_records_nothing(world, share, monkeypatch):
    big = too_large_to_index(world, share, monkeypatch)
    healthy = share / "intro.md"
    assert world.rows()[str(healthy)].state == INDEXED
    result = world.cli("ignore", str(big), str(healthy), check=2)
    assert f"{healthy}: not rejected or failed (indexed), so there is nothing to acknowledge" in result.stderr
    assert world.cli.json("status")["ignored"] == [], "refused whole: not even the failed file was recorded"
    world.cli("sync", str(share))
    assert world.cli.json("sync", str(share))["counts"]["ignored"] == 0, "the healthy file is still synced"


# 9. sync --store ----------------------------------------------------------------------------------
def test_sync_store_sends_folders_to_that_store(world, share):
    report = world.cli.json("sync", str(share), "--store", "kb")
    assert report["counts"]["new"] == 4 and set(world.stores()) == {"kb"}
    ids, files = ids_by_path(world), world.file_ids()
    (kb,) = world.stores()["kb"]
    assert set(world.store_files(kb).values()) == set(ids.values())
    moved = world.cli.json("sync", str(share), "--store", "archive")
    assert "store 'kb' renamed to 'archive' in place" in moved["notes"][0], "all of its files go: a rename"
    assert world.stores() == {"archive": [kb]} and world.file_ids() == files and moved["counts"]["uploaded"] == 0
    assert set(world.store_files(kb).values()) == set(ids.values()) and world.store_name(kb) == "archive"
    assert world.cli.json("sync", str(share))["counts"]["unchanged"] == 4, "remembered"
    result = world.cli("sync", str(share / "notes"), "--store", "x", check=2)
    assert "--store takes whole folders" in result.stderr


# 11. interrupted runs ---------------------------------------------------------------------------
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_sync_records_what_it_did(world, share, monkeypatch, sig):
    world.config("upload_concurrency = 1\n")
    for i in range(6):
        (share / f"extra{i}.md").write_text(f"extra document {i}\n")
    remote_class = "ingest.remote.openai.OpenAIRemote" if world.emu is not None else "ingest.remote.local.LocalRemote"
    import importlib

    module, name = remote_class.rsplit(".", 1)
    cls = getattr(importlib.import_module(module), name)
    real = cls.upload
    calls = []

    def upload(self, path, filename):
        calls.append(filename)
        if len(calls) == 2:
            os.kill(os.getpid(), sig)  # as the operator would, the first upload done (one at a time)
        return real(self, path, filename)

    monkeypatch.setattr(cls, "upload", upload)
    result = world.cli("sync", str(share), "--json", check=None)
    assert result.exit_code == (130 if sig == signal.SIGINT else 143)
    report = json.loads(result.stdout)
    assert report["interrupted"] == sig.name and 1 <= report["counts"]["uploaded"] < 10
    (run,) = [r for r in world.runs() if r["command"] == "sync"]
    assert run["interrupted"] == sig.name and run["exit_code"] == result.exit_code
    assert json.loads(run["counts"])["uploaded"] == report["counts"]["uploaded"]
    done = {p for p, r in world.rows().items() if r.file_id}
    assert len(done) == report["counts"]["uploaded"] == len(world.file_ids())
    monkeypatch.setattr(cls, "upload", real)
    again = world.cli.json("sync", str(share))
    assert again["counts"]["uploaded"] == 10 - len(done) and len(world.file_ids()) == 10


def test_uploads_a_stop_kept_from_being_sent_are_not_failures(world, share, monkeypatch):
    """Stopped with several uploads under way: those still waiting for their turn were never sent.
    They are left to the next run as they were, not recorded as failed (their tries not spent)."""
    if world.emu is None:
        pytest.skip("the embedded store sends nothing: there is no turn to wait for")
    from ingest import pacing
    from ingest.remote.openai import OpenAIRemote

    for i in range(12):
        (share / f"extra{i}.md").write_text(f"extra document {i}\n")
    real, calls, first_sent = OpenAIRemote.upload, [], threading.Event()
    real_acquire = pacing.Pacer.acquire

    def acquire(self, timed=True):
        if threading.current_thread().name.startswith("upload") and first_sent.is_set():
            self.stop.wait(30)  # its turn has not come when the run is stopped
        return real_acquire(self, timed)

    def upload(self, path, filename):
        calls.append(filename)
        if len(calls) == 1:
            first_sent.set()
            deadline = time.monotonic() + 30
            while len(calls) < 2 and time.monotonic() < deadline:  # another one waits for its turn
                time.sleep(0.01)
            os.kill(os.getpid(), signal.SIGTERM)
        return real(self, path, filename)

    monkeypatch.setattr(OpenAIRemote, "upload", upload)
    monkeypatch.setattr(pacing.Pacer, "acquire", acquire)
    result = world.cli("sync", str(share), "--json", check=None)
    report = json.loads(result.stdout)
    assert result.exit_code == 143 and report["interrupted"] == "SIGTERM"
    assert report["counts"]["failed"] == 0 and not report["failed"], report["failed"]
    assert len(calls) > 1, "others were under way when it stopped (the check above can fail)"
    assert not [p for p, r in world.rows().items() if r.state == "failed"]
    assert all(r.attempts <= 1 for r in world.rows().values())
    monkeypatch.setattr(OpenAIRemote, "upload", real)
    monkeypatch.setattr(pacing.Pacer, "acquire", real_acquire)
    again = world.cli.json("sync", str(share))
    assert again["counts"]["failed"] == 0 and again["exit_code"] == 0
    assert len(world.file_ids()) == 16


def test_an_upload_stopped_after_a_try_was_sent_is_left_for_the_sweep(world, share, monkeypatch):
    """A try that timed out may have reached the server; the stop then came in the retry's wait. The
    file is the next run's, not failed, and its upload stays suspect, for the sweep to look for a copy."""
    if world.emu is None:
        pytest.skip("the embedded store sends nothing")
    from ingest.errors import Stopped
    from ingest.remote.openai import OpenAIRemote

    (share / "late.md").write_text("sent once, then stopped\n")
    real = OpenAIRemote.upload

    def upload(self, path, filename):
        if filename == "late.md":
            self.stop.set()
            stopped = Stopped(f"upload {filename}")
            stopped.maybe_duplicated = True
            raise stopped
        return real(self, path, filename)

    monkeypatch.setattr(OpenAIRemote, "upload", upload)
    report = world.cli.json("sync", str(share), check=None)
    assert not report["failed"] and report.get("interrupted"), report
    row = world.rows()[str(share / "late.md")]
    assert row.state == "pending" and row.attempts == 1, "the try that was sent counts"
    m = world.manifest()
    try:
        (upload_row,) = m.db.query("select * from uploads where path = ?", ["late.md"])
    finally:
        m.close()
    assert upload_row["suspect"] == 1 and upload_row["status"] != "deleted"


# 12. filters ------------------------------------------------------------------------------------
def test_filters_that_cannot_match_are_errors_and_ext_is_normalised(world, share):
    world.cli("sync", str(share))
    dotted = world.cli.json("search", "zebrafish installer", "--filter", "ext=.md")
    plain = world.cli.json("search", "zebrafish installer", "--filter", "ext=md")
    assert dotted == plain and dotted and all(h["attributes"]["ext"] == "md" for h in dotted)
    assert dotted[0]["file_id"] == world.rows()[str(share / "guides/install.md")].file_id
    result = world.cli("search", "x", "--filter", "mtime>=2025-01-01", check=2)
    assert "mtime takes a Unix time in seconds" in result.stderr
    result = world.cli("search", "x", "--filter", "colour=red", check=2)
    assert "'colour'" in result.stderr and "ext" in result.stderr


# 10. one daemon per manifest ----------------------------------------------------------------------
def test_a_second_daemon_refuses_with_the_first_ones_pid(world, share, tmp_path):
    import subprocess
    import sys

    log = tmp_path / "first.log"
    with open(log, "w") as err:
        first = subprocess.Popen(
            [sys.executable, "-m", "ingest", "watch", str(share), "--settle", "0.1"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        until(
            lambda: "full sync:" in log.read_text() or first.poll() is not None,
            "the first full sync",
            30,
            lambda: log.read_text(errors="replace"),
        )
        assert first.poll() is None, log.read_text()
        runs, files = len(world.runs()), world.file_ids()
        second = subprocess.run(
            [sys.executable, "-m", "ingest", "watch", str(share)], capture_output=True, text=True, timeout=60
        )
        assert second.returncode == 2 and f"pid {first.pid}" in second.stderr, second.stderr
        assert "Traceback" not in second.stderr
        assert len(world.runs()) == runs and world.file_ids() == files and len(files) == 4
        (vs,) = world.stores()["share"]
        assert len(world.store_files(vs)) == 4
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(30)
    assert first.returncode == 0


def test_a_metrics_port_in_use_is_one_sentence_and_exit_2(world, share):
    import socket
    import subprocess
    import sys

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "ingest", "watch", str(share), "--metrics-port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2 and f"--metrics-port {port}" in result.stderr
    said = [line for line in result.stderr.splitlines() if "metrics-port" in line]
    assert len(said) == 1 and said[0].startswith("Error: ") and "Traceback" not in result.stderr
    assert world.rows() == {} and world.file_ids() == set(), "it stops before syncing anything"
