"""The plan turns what the scan saw and what the manifest holds into actions, and never deletes blindly."""

from __future__ import annotations

import pytest

from ingest.manifest import ATTACHING, ERROR, FAILED, INDEXED, PENDING, REJECTED, UPLOADED, UPLOADING, FileRow
from ingest.plan import GuardPolicy, Observed, RootScan, make_plan
from ingest.scan import Problem

ROOT = "/srv/docs"
OTHER_ROOT = "/srv/hr"


def seen(
    path: str, sha: str = "", *, ok: bool = True, reason: str = "", store: str = "docs", root: str = ROOT
) -> Observed:
    """A file as scanned; by default its content is its own (the same path, the same bytes)."""
    sha = sha or f"sha-{path}"
    return Observed(root, path, 10, 1, 7, 2, sha if ok else None, "text/plain", ok, reason, store)


def known(
    path: str,
    sha: str | None = "",
    *,
    state: str = INDEXED,
    file_id: str | None = "auto",
    store: str = "docs",
    root: str = ROOT,
    old_file_id: str | None = None,
) -> FileRow:
    """A manifest row; by default indexed, with a remote file, holding the content seen() gives."""
    if sha == "":
        sha = f"sha-{path}"
    if file_id == "auto":
        file_id = f"file-{path}"
    return FileRow(
        root,
        path,
        state,
        store=store,
        sha256=sha,
        file_id=file_id,
        old_file_id=old_file_id,
        vector_store_id="vs_1" if file_id else None,
    )


def full_scan(root: str = ROOT, entries: int = 1, **flags) -> RootScan:
    return RootScan(
        root=root,
        full=flags.get("full", True),
        missing=flags.get("missing", False),
        has_errors=flags.get("has_errors", False),
        entries=entries,
    )


DEFAULT_POLICY = GuardPolicy()


def plan_for(observed=(), rows=(), problems=(), scans=None, store_sizes=None, policy=DEFAULT_POLICY, **rules):
    observed, rows = list(observed), list(rows)
    if scans is None:
        scans = [full_scan(entries=max(len(observed), 1))]
    if store_sizes is None:
        store_sizes = {}
        for row in rows:
            if row.file_id:
                store_sizes[row.store] = store_sizes.get(row.store, 0) + 1
    return make_plan(
        observed, list(problems), {(r.root, r.path): r for r in rows}, scans, lambda: store_sizes, policy, **rules
    )


def paths(pairs) -> list[str]:
    return [(item[0] if isinstance(item, tuple) else item).path for item in pairs]


# what happens to each file -----------------------------------------------------------------------


def test_a_new_file_is_uploaded():
    plan = plan_for([seen("a.md")])
    assert plan.uploads == [(seen("a.md"), None)]
    assert plan.counts()["new"] == 1 and plan.counts()["changed"] == 0


def test_an_unchanged_file_is_left_alone():
    row = known("a.md")
    plan = plan_for([seen("a.md")], [row])
    assert plan.unchanged == [(seen("a.md"), row)]
    assert not plan.uploads and not plan.deletes and not plan.retirements()
    assert plan.counts()["unchanged"] == 1


def test_a_changed_file_is_uploaded_again_with_its_row():
    row = known("a.md", "aaa")
    plan = plan_for([seen("a.md", "bbb")], [row])
    assert plan.uploads == [(seen("a.md", "bbb"), row)]
    assert plan.counts()["changed"] == 1 and plan.counts()["new"] == 0
    assert not plan.deletes, "the old version keeps serving until the new one is indexed"


def test_a_file_routed_to_another_store_keeps_its_file_and_is_not_uploaded_again():
    row = known("a.md", store="docs")
    plan = plan_for([seen("a.md", store="archive")], [row])
    assert plan.transfers == [(seen("a.md", store="archive"), row)] and not plan.uploads
    assert plan.counts()["moved_store"] == 1 and plan.counts()["new"] == 0


def test_a_changed_file_routed_to_another_store_is_uploaded():
    row = known("a.md", "aaa", store="docs")
    plan = plan_for([seen("a.md", "bbb", store="archive")], [row])
    assert plan.uploads == [(seen("a.md", "bbb", store="archive"), row)] and not plan.transfers


def test_a_file_the_configuration_leaves_out_is_excluded_not_deleted():
    kept, left_out = known("a.md"), known("drafts/b.md")
    plan = make_plan(
        [seen("a.md")],
        [],
        {(r.root, r.path): r for r in (kept, left_out)},
        [RootScan(ROOT, True, False, False, 1)],
        lambda: {"docs": 2},
        GuardPolicy(floor=5),
        excluded=lambda row: row.path.startswith("drafts/"),
    )
    assert plan.excluded == [left_out] and not plan.deletes
    assert plan.retirements() == [left_out], "an excluded file's remote copy goes like a deleted one's"
    assert plan.counts()["excluded"] == 1 and plan.counts()["deleted"] == 0


def test_exclusions_are_held_by_the_mass_delete_guard():
    rows = [known(f"drafts/{i}.md") for i in range(10)]
    plan = make_plan(
        [],
        [],
        {(r.root, r.path): r for r in rows},
        [RootScan(ROOT, True, False, False, 3)],
        lambda: {"docs": 10},
        GuardPolicy(floor=5),
        excluded=lambda row: True,
    )
    assert not plan.excluded and len(plan.held) == 10
    assert all("excluded by the configuration" in why for _, why in plan.held)


def test_a_moved_file_keeps_its_remote_file():
    old = known("old/a.md", "aaa")
    plan = plan_for([seen("new/a.md", "aaa")], [old])
    assert plan.moves == [(seen("new/a.md", "aaa"), old)]
    assert not plan.uploads and not plan.deletes and not plan.held
    assert plan.counts()["moved"] == 1


def test_a_move_across_roots_into_the_same_store_is_a_move():
    old = known("a.md", root=OTHER_ROOT)
    scans = [full_scan(ROOT), full_scan(OTHER_ROOT)]
    plan = plan_for([seen("a.md", root=ROOT)], [old], scans=scans)
    assert plan.moves == [(seen("a.md", root=ROOT), old)]


def test_the_same_bytes_in_another_store_are_uploaded_not_moved():
    old = known("old/a.md", "aaa", store="docs")
    plan = plan_for([seen("new/a.md", "aaa", store="archive")], [old], store_sizes={"docs": 100})
    assert plan.uploads == [(seen("new/a.md", "aaa", store="archive"), None)]
    assert plan.deletes == [old] and not plan.moves


def test_a_copy_is_uploaded_and_the_original_stays():
    original = known("a.md", "aaa")
    plan = plan_for([seen("a.md", "aaa"), seen("copy of a.md", "aaa")], [original])
    assert plan.unchanged == [(seen("a.md", "aaa"), original)]
    assert plan.uploads == [(seen("copy of a.md", "aaa"), None)]
    assert not plan.moves and not plan.deletes


def test_two_moved_copies_each_take_one_old_row():
    rows = [known("x/1.md", "same"), known("x/2.md", "same")]
    plan = plan_for([seen("y/1.md", "same"), seen("y/2.md", "same"), seen("y/3.md", "same")], rows)
    assert sorted((new.path, old.path) for new, old in plan.moves) == [("y/1.md", "x/1.md"), ("y/2.md", "x/2.md")]
    assert paths(plan.uploads) == ["y/3.md"] and not plan.deletes


def test_a_half_done_upload_is_not_a_move_source():
    old = known("old/a.md", "aaa", state=UPLOADING, file_id=None)
    plan = plan_for([seen("new/a.md", "aaa")], [old])
    assert paths(plan.uploads) == ["new/a.md"] and not plan.moves
    assert plan.deletes == [old], "nothing remote to keep: the row is forgotten"


def test_a_rejected_file_is_reported_and_its_remote_copy_retired():
    row = known("a.pdf")
    bad = seen("a.pdf", ok=False, reason="content is text/plain, not a PDF document as .pdf says")
    plan = plan_for([bad], [row])
    assert plan.rejected == [(bad, row)]
    assert plan.retirements() == [row]
    assert not plan.uploads and not plan.deletes
    assert plan.counts()["rejected"] == 1


def test_a_new_rejected_file_retires_nothing():
    bad = seen("a.csv", ok=False, reason="type .csv is not supported by file_search")
    plan = plan_for([bad])
    assert plan.rejected == [(bad, None)] and plan.retirements() == []


def test_a_once_rejected_file_that_is_now_valid_is_uploaded():
    row = known("a.md", None, state=REJECTED, file_id=None)
    plan = plan_for([seen("a.md", "aaa")], [row])
    assert paths(plan.uploads) == ["a.md"] and not plan.resumes


@pytest.mark.parametrize(
    "state, file_id, old_file_id",
    [
        (PENDING, None, None),
        (UPLOADING, None, None),
        (UPLOADED, "file-new", None),
        (ATTACHING, "file-new", None),
        (FAILED, None, None),
        (FAILED, "file-new", None),
        (ERROR, "file-new", None),
        (INDEXED, "file-new", "file-old"),  # indexed, the old version not yet retired
        (UPLOADED, "file-new", "file-old"),
    ],
)
def test_a_half_done_file_with_the_same_content_is_resumed(state, file_id, old_file_id):
    row = known("a.md", "aaa", state=state, file_id=file_id, old_file_id=old_file_id)
    plan = plan_for([seen("a.md", "aaa")], [row])
    assert plan.resumes == [(seen("a.md", "aaa"), row)]
    assert not plan.uploads and not plan.unchanged
    assert plan.counts()["resumed"] == 1


def test_a_half_done_file_whose_content_changed_starts_over():
    row = known("a.md", "aaa", state=ATTACHING, file_id="file-new")
    plan = plan_for([seen("a.md", "bbb")], [row])
    assert plan.uploads == [(seen("a.md", "bbb"), row)] and not plan.resumes


def test_problems_are_split_into_refusals_and_errors():
    fifo = Problem(ROOT, "pipe.txt", "not a regular file (FIFO, socket or device)", False)
    locked = Problem(ROOT, "locked.md", "cannot read: permission denied", True)
    was_doc = known("pipe.txt")
    still_there = known("locked.md")
    plan = plan_for([seen("a.md")], [was_doc, still_there], problems=[fifo, locked], scans=[full_scan(has_errors=True)])
    assert plan.refused == [(fifo, was_doc)]
    assert plan.unreadable == [(locked, still_there)]
    assert plan.retirements() == [was_doc], "a refused file's remote copy goes; an unreadable one's stays"
    assert not plan.deletes and not plan.held, "neither is a deletion"
    assert plan.counts()["rejected"] == 1 and plan.counts()["unreadable"] == 1


# deletions and the guard -------------------------------------------------------------------------


def test_a_removed_file_is_deleted():
    kept, gone = known("a.md"), known("b.md")
    plan = plan_for([seen("a.md")], [kept, gone], store_sizes={"docs": 100})
    assert plan.deletes == [gone] and not plan.held
    assert plan.retirements() == [gone]
    assert plan.counts()["deleted"] == 1


def test_a_scoped_scan_deletes_what_is_gone_from_its_scope():
    gone = known("guides/b.md")
    plan = plan_for([], [gone], scans=[full_scan(entries=0, full=False)], store_sizes={"docs": 100})
    assert plan.deletes == [gone] and not plan.held


@pytest.mark.parametrize(
    "flags, words",
    [
        ({"missing": True}, "the root is missing or not mounted"),
        ({"has_errors": True}, "the scan of this root had errors"),
    ],
)
def test_deletions_are_held_when_the_scan_cannot_be_trusted(flags, words):
    gone = known("b.md")
    plan = plan_for([seen("a.md")], [known("a.md"), gone], scans=[full_scan(**flags)], store_sizes={"docs": 100})
    assert plan.held == [(gone, words)]
    assert not plan.deletes and plan.retirements() == []
    assert plan.counts()["held"] == 1


def test_an_empty_root_holds_its_deletions():
    rows = [known("a.md"), known("b.md")]
    plan = plan_for([], rows, scans=[full_scan(entries=0)], store_sizes={"docs": 100})
    assert [why for _, why in plan.held] == ["the root is empty; is the share mounted?"] * 2
    assert not plan.deletes


def emptied_by_excludes(present, policy=DEFAULT_POLICY):
    """A root of three files that an exclude leaves empty: the scan found nothing to keep."""
    rows = [known(f"{i}.md") for i in range(3)]
    return make_plan(
        [],
        [],
        {(r.root, r.path): r for r in rows},
        [full_scan(entries=0)],
        lambda: {"docs": 3},
        policy,
        excluded=lambda row: True,
        present=present,
    )


def test_a_root_its_excludes_leave_empty_is_held_as_excluded_not_as_empty():
    plan = emptied_by_excludes(present=lambda row: True)
    assert len(plan.held) == 3 and not plan.deletes and not plan.excluded and plan.retirements() == []
    why = {why for _, why in plan.held}
    assert len(why) == 1 and "empty" not in why.pop(), "the root is there: its files are left out, not gone"
    assert "left out by its include/exclude rules" in plan.held[0][1] and "nothing was removed" in plan.held[0][1]
    assert "--allow-mass-delete" in plan.held[0][1], "it says what to do"


def test_a_root_its_excludes_leave_empty_lets_them_go_when_allowed():
    plan = emptied_by_excludes(present=lambda row: True, policy=GuardPolicy(allow_mass_delete=True))
    assert len(plan.excluded) == 3 and not plan.held


def test_an_empty_root_whose_excluded_files_are_gone_too_stays_held_as_empty():
    """An unmounted share that has an exclude: its files are not there, so the rules did not empty it."""
    plan = emptied_by_excludes(present=lambda row: False, policy=GuardPolicy(allow_mass_delete=True))
    assert [why for _, why in plan.held] == ["the root is empty; is the share mounted?"] * 3


def test_a_root_that_was_not_scanned_holds_its_deletions():
    gone = known("b.md", root=OTHER_ROOT)
    plan = plan_for([seen("a.md")], [gone], scans=[full_scan(ROOT)], store_sizes={"docs": 100})
    assert plan.held == [(gone, "the root is missing or not mounted")]


def test_rows_without_a_remote_file_are_forgotten_even_when_the_root_is_missing():
    never_uploaded = known("pending.md", state=PENDING, file_id=None)
    rejected = known("table.csv", None, state=REJECTED, file_id=None)
    plan = plan_for([], [never_uploaded, rejected], scans=[full_scan(missing=True, entries=0)])
    assert plan.deletes == [never_uploaded, rejected]
    assert not plan.held and plan.retirements() == [never_uploaded, rejected]


def test_a_row_with_only_an_old_remote_file_is_held_too():
    row = known("a.md", state=PENDING, file_id=None, old_file_id="file-old")
    plan = plan_for([], [row], scans=[full_scan(missing=True, entries=0)])
    assert plan.held == [(row, "the root is missing or not mounted")]


def test_a_mass_deletion_is_held():
    rows = [known(f"{i}.md") for i in range(20)]
    plan = plan_for([seen(f"{i}.md") for i in range(14)], rows)  # 6 of 20 gone: over 20% and over 5
    assert len(plan.held) == 6 and not plan.deletes
    assert all(
        "more than 20% of store 'docs' would be deleted" in why and "--allow-mass-delete" in why for _, why in plan.held
    )


def test_a_held_deletion_says_what_lets_it_go_for_the_command_that_held_it():
    """The daemon and verify have no --allow-mass-delete: they name the sync that lets the files go."""
    rows = [known(f"{i}.md") for i in range(20)]
    advice = {
        command: {why for _, why in plan_for([seen(f"{i}.md") for i in range(14)], rows, policy=policy).held}
        for command, policy in [(c, GuardPolicy(command=c)) for c in ("sync", "watch", "verify")]
    }
    assert {why.split("; ")[1] for why in advice["sync"]} == {"run again with --allow-mass-delete if intended"}
    assert {why.split("; ")[1] for why in advice["watch"]} == {
        f"run `ingest sync {ROOT} --allow-mass-delete --wait` beside the daemon if intended"
    }
    assert {why.split("; ")[1] for why in advice["verify"]} == {
        f"run `ingest sync {ROOT} --allow-mass-delete` if intended"
    }
    emptied = emptied_by_excludes(present=lambda row: True, policy=GuardPolicy(command="watch-full"))
    assert all(
        f"(run `ingest sync {ROOT} --allow-mass-delete --wait` beside the daemon to" in w for _, w in emptied.held
    )


def test_a_mass_deletion_goes_ahead_when_allowed():
    rows = [known(f"{i}.md") for i in range(20)]
    plan = plan_for([seen(f"{i}.md") for i in range(14)], rows, policy=GuardPolicy(allow_mass_delete=True))
    assert len(plan.deletes) == 6 and not plan.held


def test_allowing_a_mass_deletion_does_not_override_an_untrusted_scan():
    rows = [known(f"{i}.md") for i in range(20)]
    plan = plan_for([], rows, scans=[full_scan(missing=True, entries=0)], policy=GuardPolicy(allow_mass_delete=True))
    assert len(plan.held) == 20 and not plan.deletes


@pytest.mark.parametrize(
    "store_size, gone, held",
    [
        (20, 5, False),  # at the floor: small deletions always go ahead
        (20, 6, True),  # over the floor and over 20%
        (100, 20, False),  # exactly 20%: not more than
        (100, 21, True),
        (1000, 150, False),
    ],
)
def test_the_mass_deletion_threshold(store_size, gone, held):
    rows = [known(f"{i}.md") for i in range(gone)]
    plan = plan_for([seen("kept.md")], rows, store_sizes={"docs": store_size})
    assert bool(plan.held) is held
    assert len(plan.deletes) == (0 if held else gone)


def test_the_guard_counts_each_store_on_its_own():
    small = [known(f"s{i}.md", store="small") for i in range(6)]
    big = [known(f"b{i}.md", store="big") for i in range(6)]
    plan = plan_for([seen("kept.md")], small + big, store_sizes={"small": 10, "big": 1000})
    assert {row.store for row, _ in plan.held} == {"small"}
    assert {row.store for row in plan.deletes} == {"big"}


def test_the_policy_comes_from_the_caller():
    rows = [known(f"{i}.md") for i in range(3)]
    plan = plan_for([seen("kept.md")], rows, store_sizes={"docs": 10}, policy=GuardPolicy(max_fraction=0.1, floor=2))
    assert len(plan.held) == 3
    assert "more than 10% of store 'docs'" in plan.held[0][1]


def test_counts_add_up():
    rows = [known("same.md"), known("changed.md", "old"), known("gone.md"), known("moved-from.md", "mv")]
    observed = [
        seen("same.md"),
        seen("changed.md", "new"),
        seen("moved-to.md", "mv"),
        seen("new.md", "n"),
        seen("bad.csv", ok=False, reason="type .csv is not supported by file_search"),
    ]
    plan = plan_for(observed, rows, store_sizes={"docs": 100})
    assert plan.counts() == {
        "scanned": 5,
        "new": 1,
        "changed": 1,
        "resumed": 0,
        "moved": 1,
        "moved_store": 0,
        "attributes": 0,
        "deleted": 1,
        "excluded": 0,
        "ignored": 0,
        "unchanged": 1,
        "rejected": 1,
        "unreadable": 0,
        "held": 0,
    }


def test_an_unchanged_file_whose_attributes_are_due_is_planned_as_an_attribute_update():
    """A dry run shows what the run does: a touched file's new mtime attribute is a remote call."""
    rows = [known("same.md"), known("touched.md")]
    plan = plan_for(
        [seen("same.md"), seen("touched.md")], rows, attributes_due=lambda obs, row: obs.path == "touched.md"
    )
    assert paths(plan.refreshes) == ["touched.md"] and paths(plan.unchanged) == ["same.md"]
    counts = plan.counts()
    assert (counts["scanned"], counts["attributes"], counts["unchanged"]) == (2, 1, 1)
    assert plan.describe()["attributes"] == [f"{ROOT}/touched.md"] and plan.describe()["unchanged"] == [
        f"{ROOT}/same.md"
    ]


def test_files_turning_invalid_en_masse_are_held_not_retired():
    from ingest.manifest import INDEXED, FileRow
    from ingest.plan import GuardPolicy, Observed, RootScan, make_plan

    rows = {
        ("/r", f"d{i}.txt"): FileRow("/r", f"d{i}.txt", INDEXED, store="s", sha256=f"h{i}", file_id=f"f{i}")
        for i in range(10)
    }
    observed = [Observed("/r", f"d{i}.txt", 1, 1, 1, None, None, "", False, "content is x", "s") for i in range(10)]
    plan = make_plan(observed, [], rows, [RootScan("/r", True, False, False, 10)], lambda: {"s": 10}, GuardPolicy())
    assert plan.rejected == [] and len(plan.held) == 10 and plan.retirements() == []
    allowed = make_plan(
        observed,
        [],
        rows,
        [RootScan("/r", True, False, False, 10)],
        lambda: {"s": 10},
        GuardPolicy(allow_mass_delete=True),
    )
    assert len(allowed.rejected) == 10 and len(allowed.retirements()) == 10


def test_no_move_is_taken_from_a_root_whose_scan_failed():
    from ingest.manifest import INDEXED, FileRow
    from ingest.plan import GuardPolicy, Observed, RootScan, make_plan

    rows = {("/a", "x.txt"): FileRow("/a", "x.txt", INDEXED, store="s", sha256="h", file_id="f1")}
    observed = [Observed("/b", "x.txt", 1, 1, 1, 1, "h", "text/plain", True, "", "s")]
    scans = [RootScan("/a", True, True, False, 0), RootScan("/b", True, False, False, 1)]
    plan = make_plan(observed, [], rows, scans, lambda: {"s": 1}, GuardPolicy())
    assert plan.moves == [] and len(plan.uploads) == 1 and plan.held
