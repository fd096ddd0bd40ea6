"""The OpenAI emulator, driven by the real openai SDK over HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import openai
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.emulator import Emulator  # noqa: E402


@pytest.fixture
def emu():
    with Emulator(index_delay=0.05, poll_after_ms=20) as e:
        yield e


def sdk(emu: Emulator, **kw) -> openai.OpenAI:
    """max_retries=0 unless told; sdk(emu, max_retries=None) keeps the SDK's default (2 retries)."""
    kw.setdefault("max_retries", 0)
    if kw["max_retries"] is None:
        del kw["max_retries"]
    return openai.OpenAI(base_url=emu.base_url, api_key="test", **kw)


@pytest.fixture
def client(emu):
    return sdk(emu)


def upload(client, name: str, data: bytes = b"some text") -> str:
    return client.files.create(file=(name, data), purpose="assistants").id


def test_upload_batch_with_attributes_indexes_in_progress_then_completed(emu, client):
    emu.configure(index_delay=0.5)
    ids = [upload(client, f"doc{i}.md", f"# doc {i}\nbody".encode()) for i in range(3)]
    store = client.vector_stores.create(name="kb", metadata={"owner": "ingest"})
    assert store.id.startswith("vs_") and store.status == "completed" and store.metadata == {"owner": "ingest"}
    batch = client.vector_stores.file_batches.create(
        store.id,
        files=[
            {"file_id": fid, "attributes": {"path": f"doc{i}.md", "rev": i, "ok": True}} for i, fid in enumerate(ids)
        ],
    )
    assert batch.id.startswith("vsfb_") and batch.object == "vector_store.files_batch"
    assert batch.status == "in_progress" and batch.file_counts.in_progress == 3 and batch.file_counts.total == 3
    assert client.vector_stores.files.retrieve(ids[0], vector_store_id=store.id).status == "in_progress"
    assert client.vector_stores.retrieve(store.id).status == "in_progress"

    done = client.vector_stores.file_batches.poll(batch.id, vector_store_id=store.id)
    assert done.id == batch.id and done.status == "completed"
    assert done.file_counts.completed == 3 and done.file_counts.in_progress == 0
    sf = client.vector_stores.files.retrieve(ids[1], vector_store_id=store.id)
    assert sf.status == "completed" and sf.last_error is None and sf.usage_bytes > 0
    assert sf.attributes == {"path": "doc1.md", "rev": 1, "ok": True}
    assert sf.chunking_strategy.type == "static" and sf.chunking_strategy.static.max_chunk_size_tokens == 800
    s = client.vector_stores.retrieve(store.id)
    assert (
        s.status == "completed"
        and s.file_counts.completed == 3
        and s.usage_bytes == sum(len(f"# doc {i}\nbody") for i in range(3))
    )


def test_reattach_replaces_instead_of_duplicating(emu, client):
    fid = upload(client, "a.txt")
    store = client.vector_stores.create(name="s")
    client.vector_stores.files.create_and_poll(file_id=fid, vector_store_id=store.id, attributes={"v": 1})
    client.vector_stores.file_batches.create_and_poll(store.id, files=[{"file_id": fid, "attributes": {"v": 2}}])
    files = list(client.vector_stores.files.list(store.id))
    assert [f.id for f in files] == [fid] and files[0].attributes == {"v": 2}
    assert client.vector_stores.retrieve(store.id).file_counts.total == 1


def test_store_file_pagination_over_250_files(emu, client):
    store = client.vector_stores.create(name="big")
    ids = [emu.create_file(f"f{i:03}.txt", b"x") for i in range(250)]
    client.vector_stores.file_batches.create_and_poll(store.id, file_ids=ids)
    pages = []
    page = client.vector_stores.files.list(store.id, limit=100, order="asc")
    while True:
        pages.append(page)
        if not page.has_next_page():
            break
        page = page.get_next_page()
    assert [len(p.data) for p in pages] == [100, 100, 50]
    assert [p.has_more for p in pages] == [True, True, False]
    assert [f.id for p in pages for f in p.data] == ids
    assert [f.id for f in client.vector_stores.files.list(store.id, limit=100)] == ids[::-1]  # default desc
    assert len(list(client.vector_stores.files.list(store.id, filter="completed", limit=100))) == 250
    with pytest.raises(openai.BadRequestError):
        client.vector_stores.files.list(store.id, limit=101)
    listed = client.files.list(purpose="assistants")  # default limit 10000: one page
    assert len(listed.data) == 250 and listed.has_more is False


def test_unsupported_and_empty_files_fail_with_their_codes(emu, client):
    store = client.vector_stores.create(name="s")
    csv, empty = upload(client, "table.csv", b"a,b\n1,2"), upload(client, "empty.txt", b"")
    batch = client.vector_stores.file_batches.create_and_poll(store.id, file_ids=[csv, empty])
    assert batch.status == "completed" and batch.file_counts.failed == 2  # completed even though files failed
    failed = {
        f.id: f.last_error.code
        for f in client.vector_stores.file_batches.list_files(batch.id, vector_store_id=store.id, filter="failed")
    }
    assert failed == {csv: "unsupported_file", empty: "invalid_file"}


def test_batch_validation(emu, client):
    store = client.vector_stores.create(name="s")
    fid = upload(client, "a.txt")
    with pytest.raises(openai.BadRequestError):
        client.vector_stores.file_batches.create(store.id, file_ids=[fid], files=[{"file_id": fid}])
    with pytest.raises(openai.BadRequestError):
        client.vector_stores.file_batches.create(store.id)
    with pytest.raises(openai.BadRequestError) as exc:
        client.vector_stores.file_batches.create(store.id, file_ids=[fid] * 2001)
    assert exc.value.code == "array_above_max_length"
    with pytest.raises(openai.NotFoundError):
        client.vector_stores.file_batches.create(store.id, file_ids=[fid, "file-missing"])
    with pytest.raises(openai.BadRequestError):
        client.vector_stores.file_batches.retrieve(store.id, vector_store_id=store.id)  # not a vsfb_ id
    assert client.vector_stores.retrieve(store.id).file_counts.total == 0  # nothing half-attached


@pytest.mark.parametrize(
    "attributes, code",
    [
        ({f"k{i}": i for i in range(17)}, "object_above_max_properties"),
        ({"k" * 65: "v"}, "object_property_name_above_max_length"),
        ({"k": "v" * 513}, "string_above_max_length"),
        ({"k": ["a"]}, "invalid_type"),
        ({"k": {"a": 1}}, "invalid_type"),
    ],
)
def test_attribute_limits(emu, client, attributes, code):
    store = client.vector_stores.create(name="s")
    fid = upload(client, "a.txt")
    with pytest.raises(openai.BadRequestError) as exc:
        client.vector_stores.file_batches.create(store.id, files=[{"file_id": fid, "attributes": attributes}])
    assert exc.value.code == code
    with pytest.raises(openai.BadRequestError):
        client.vector_stores.files.create(vector_store_id=store.id, file_id=fid, attributes=attributes)
    ok = {f"k{i}": "v" * 512 for i in range(14)} | {"n": 1.5, "b": False}  # 16 keys at the limits
    client.vector_stores.files.create(vector_store_id=store.id, file_id=fid, attributes=ok)


def test_metadata_and_expiry_validation(emu, client):
    with pytest.raises(openai.BadRequestError):
        client.vector_stores.create(name="s", metadata={f"k{i}": "v" for i in range(17)})
    with pytest.raises(openai.BadRequestError):
        client.vector_stores.create(name="s", metadata={"k": 1})
    with pytest.raises(openai.BadRequestError):
        client.vector_stores.create(name="s", expires_after={"anchor": "last_active_at", "days": 366})
    s = client.vector_stores.create(name="s", expires_after={"anchor": "last_active_at", "days": 1})
    assert s.expires_at == s.last_active_at + 86400
    emu.advance_time(86401)
    assert client.vector_stores.retrieve(s.id).status == "expired"


def test_rate_limit_429_has_retry_after_and_default_retries_get_through(emu):
    emu.configure(upload_rps=2)
    bare = sdk(emu)
    statuses = []
    for i in range(4):
        try:
            bare.files.create(file=(f"r{i}.txt", b"x"), purpose="assistants")
            statuses.append(200)
        except openai.RateLimitError as exc:
            statuses.append(429)
            headers = exc.response.headers
            assert float(headers["retry-after-ms"]) > 0 and int(headers["retry-after"]) >= 1
            assert "x-ratelimit-limit-requests" in headers and exc.code == "rate_limit_exceeded"
    assert 429 in statuses and statuses[:2] == [200, 200]
    retrying = sdk(emu, max_retries=None)
    for i in range(4):
        retrying.files.create(file=(f"ok{i}.txt", b"x"), purpose="assistants")
    counters = emu.counters()
    assert counters["rate_limited"] >= 1 and counters["429s"] == counters["rate_limited"]
    assert len(emu.files()) == statuses.count(200) + 4  # a 429 never creates anything


def test_lost_reply_upload_creates_the_file_but_the_client_sees_a_connection_error(emu, client):
    emu.lose_next_replies(1)
    with pytest.raises(openai.APIConnectionError):
        client.files.create(file=("lost.txt", b"data"), purpose="assistants")
    assert [f["filename"] for f in emu.files()] == ["lost.txt"]
    emu.lose_next_replies(1)
    sdk(emu, max_retries=None).files.create(file=("dup.txt", b"data"), purpose="assistants")
    assert [f["filename"] for f in emu.files()].count("dup.txt") == 2  # the classic duplicate
    assert emu.counters()["lost_replies"] == 2


def test_injected_faults_do_not_touch_state(emu, client):
    emu.configure(timeout_s=2)
    for kind, error in (
        ("500", openai.InternalServerError),
        ("503", openai.InternalServerError),
        ("429", openai.RateLimitError),
        ("reset", openai.APIConnectionError),
    ):
        emu.inject(kind, endpoint="POST /files")
        with pytest.raises(error):
            client.files.create(file=("f.txt", b"x"), purpose="assistants")
    emu.inject("timeout", endpoint="POST /files")
    with pytest.raises(openai.APITimeoutError):
        sdk(emu, timeout=0.3).files.create(file=("f.txt", b"x"), purpose="assistants")
    assert emu.files() == []
    emu.inject("reset", endpoint="GET /files")
    assert sdk(emu, max_retries=None).files.list().data == []  # retried through
    assert emu.counters()["faults"] == {"500": 1, "503": 1, "429": 1, "reset": 2, "timeout": 1}


def test_random_faults_are_reproducible_with_a_seed():
    def run():
        with Emulator(fault_rate=0.5, fault_mix={"500": 1, "503": 1}, seed=7) as e:
            c = sdk(e)
            out = []
            for _ in range(20):
                try:
                    c.vector_stores.list()
                    out.append(200)
                except openai.APIStatusError as exc:
                    out.append(exc.status_code)
            return out

    first = run()
    assert first == run() and {500, 503, 200} <= set(first)


def test_delete_file_removes_it_from_every_store_and_detach_keeps_the_file(emu, client):
    a, b = upload(client, "a.txt"), upload(client, "b.txt")
    s1, s2 = client.vector_stores.create(name="1"), client.vector_stores.create(name="2")
    for s in (s1, s2):
        client.vector_stores.file_batches.create_and_poll(s.id, file_ids=[a, b])
    assert client.files.delete(a).deleted
    for s in (s1, s2):
        assert [f.id for f in client.vector_stores.files.list(s.id)] == [b]
        with pytest.raises(openai.NotFoundError):
            client.vector_stores.files.retrieve(a, vector_store_id=s.id)
    client.vector_stores.files.delete(b, vector_store_id=s1.id)
    assert client.files.retrieve(b).id == b
    with pytest.raises(openai.NotFoundError):
        client.files.delete(a)
    with pytest.raises(openai.BadRequestError):
        client.files.content(b)  # purpose assistants cannot be downloaded


def test_search_with_filters(emu, client):
    store = client.vector_stores.create(name="s")
    docs = {
        "en.md": ("the quick brown fox", {"lang": "en", "year": 2024}),
        "de.md": ("der schnelle braune fox", {"lang": "de", "year": 2020}),
        "fr.md": ("le renard brun rapide", {"lang": "fr", "year": 2023}),
    }
    ids = {name: upload(client, name, text.encode()) for name, (text, _) in docs.items()}
    client.vector_stores.file_batches.create_and_poll(
        store.id, files=[{"file_id": ids[n], "attributes": attrs} for n, (_, attrs) in docs.items()]
    )
    hits = client.vector_stores.search(store.id, query="fox", filters={"type": "eq", "key": "lang", "value": "en"})
    assert [(h.filename, h.attributes["lang"]) for h in hits.data] == [("en.md", "en")]
    assert "fox" in hits.data[0].content[0].text and 0 < hits.data[0].score <= 1
    assert {h.filename for h in client.vector_stores.search(store.id, query="fox")} == {"en.md", "de.md"}
    compound = {
        "type": "and",
        "filters": [
            {"type": "gte", "key": "year", "value": 2021},
            {"type": "in", "key": "lang", "value": ["en", "fr"]},
        ],
    }
    found = client.vector_stores.search(store.id, query="fox renard", filters=compound, max_num_results=50)
    assert {h.filename for h in found} == {"en.md", "fr.md"}
    with pytest.raises(openai.BadRequestError):
        client.vector_stores.search(store.id, query="fox", max_num_results=51)
    with pytest.raises(openai.BadRequestError):
        client.vector_stores.search(store.id, query="fox", filters={"type": "like", "key": "a", "value": 1})


def test_poll_after_header_on_batch_and_store_file_gets(emu, client):
    store = client.vector_stores.create(name="s")
    fid = upload(client, "a.txt")
    batch = client.vector_stores.file_batches.create(store.id, file_ids=[fid])
    raws = [
        client.vector_stores.file_batches.with_raw_response.retrieve(batch.id, vector_store_id=store.id),
        client.vector_stores.files.with_raw_response.retrieve(fid, vector_store_id=store.id),
        client.vector_stores.files.with_raw_response.list(store.id),
    ]
    assert [r.headers.get("openai-poll-after-ms") for r in raws] == ["20", "20", "20"]
    assert "openai-poll-after-ms" not in client.vector_stores.with_raw_response.retrieve(store.id).headers


def test_auth(emu):
    emu.configure(rejected_keys={"revoked"})
    with pytest.raises(openai.AuthenticationError) as exc:
        openai.OpenAI(base_url=emu.base_url, api_key="revoked", max_retries=0).files.list()
    assert exc.value.code == "invalid_api_key"


def test_tamper_and_stuck_batches(emu, client):
    store = client.vector_stores.create(name="s")
    a, b = upload(client, "a.txt", b"alpha"), upload(client, "b.txt", b"beta")
    client.vector_stores.file_batches.create_and_poll(
        store.id, files=[{"file_id": a, "attributes": {"x": 1}}, {"file_id": b}]
    )
    stray = emu.add_stray_file(store.id, "stray.md", attributes={"x": 9})
    emu.fail_store_file(store.id, b)
    emu.set_store_file_attributes(store.id, a, {"x": 2})
    orphan = emu.create_file("orphan.txt", b"o")
    listed = {f.id: f for f in client.vector_stores.files.list(store.id)}
    assert set(listed) == {a, b, stray} and listed[b].last_error.code == "server_error"
    assert listed[a].attributes == {"x": 2} and client.files.retrieve(orphan).filename == "orphan.txt"
    emu.delete_store_file(store.id, stray)
    assert {f["id"] for f in emu.store_files(store.id)} == {a, b}

    emu.configure(stuck_batches=True)
    c = upload(client, "c.txt")
    batch = client.vector_stores.file_batches.create(store.id, file_ids=[c])
    emu.advance_time(60)  # long past any indexing delay: only stuck_batches holds it
    assert client.vector_stores.file_batches.retrieve(batch.id, vector_store_id=store.id).status == "in_progress"
    cancelled = client.vector_stores.file_batches.cancel(batch.id, vector_store_id=store.id)
    assert cancelled.status == "cancelled" and cancelled.file_counts.cancelled == 1

    emu.expire_store(store.id)
    assert client.vector_stores.retrieve(store.id).status == "expired"
    with pytest.raises(openai.BadRequestError):
        client.vector_stores.file_batches.create(store.id, file_ids=[orphan])
    with pytest.raises(openai.BadRequestError):
        client.vector_stores.search(store.id, query="alpha")
    emu.delete_store(store.id)
    with pytest.raises(openai.NotFoundError):
        client.vector_stores.retrieve(store.id)


def test_server_error_only_the_first_time(emu, client):
    emu.configure(index_fail_names={"flaky.md"}, index_fail_times=1)
    store = client.vector_stores.create(name="s")
    fid = upload(client, "flaky.md", b"text")
    first = client.vector_stores.files.create_and_poll(file_id=fid, vector_store_id=store.id)
    assert first.status == "failed" and first.last_error.code == "server_error"
    again = client.vector_stores.files.create_and_poll(file_id=fid, vector_store_id=store.id)
    assert again.status == "completed"


def test_stop_is_prompt_and_closes_kept_alive_connections():
    emu = Emulator().start()
    client = sdk(emu)
    client.vector_stores.list()
    stopper = threading.Thread(target=emu.stop)
    stopper.start()
    stopper.join(60)  # a hang detector, not a speed bound: a kept-alive connection must not hold stop() up
    assert not stopper.is_alive(), "stop() waited on a kept-alive connection"
    with pytest.raises(openai.APIConnectionError):
        client.vector_stores.list()


def test_cli_subprocess_serves_until_sigterm():
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.emulator", "--port", "0", "--latency-ms", "5", "--upload-rps", "100"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("listening on http://127.0.0.1:") and line.endswith("/v1")
        client = openai.OpenAI(base_url=line.split()[-1], api_key="test", max_retries=0)
        assert client.vector_stores.create(name="x").status == "completed"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_the_llama_stack_profile_differs_as_llama_stack_does():
    import openai

    from tests.emulator import Emulator

    with Emulator(index_delay=0.0, profile="llama-stack") as emu:
        client = openai.OpenAI(base_url=emu.base_url, api_key="x", max_retries=0)
        assert client.get("/version", cast_to=object) == {"version": "0.7.3"}
        client.files.list()  # a fresh server makes its tables on the first read
        store = client.vector_stores.create(name="s")
        fid = client.files.create(file=("a.md", b"the wombat burrows"), purpose="assistants").id
        with pytest.raises(openai.BadRequestError) as refused:
            client.vector_stores.file_batches.create(store.id, files=[{"file_id": fid, "attributes": {"k": 1}}])
        assert refused.value.body == {
            "errors": [{"loc": ["body", "file_ids"], "msg": "Field required", "type": "missing"}]
        }
        sf = client.vector_stores.files.create(store.id, file_id=fid, attributes={"year": 2024, "tag": "old"})
        assert sf.status == "completed", "answers once embedded"
        again = client.vector_stores.files.create(store.id, file_id=fid, attributes={"tag": "other"})
        assert again.attributes == {"year": 2024.0, "tag": "old"}, "a second attach is a no-op; integers as floats"
        client.vector_stores.files.update(fid, vector_store_id=store.id, attributes={"tag": "new"})
        assert client.vector_stores.files.retrieve(fid, vector_store_id=store.id).attributes == {"tag": "new"}
        (hit,) = client.vector_stores.search(store.id, query="wombat").data
        assert hit.attributes["tag"] == "old" and "chunk_id" in hit.attributes and hit.score > 1
        with pytest.raises(openai.BadRequestError):
            client.vector_stores.search(store.id, query="wombat", rewrite_query=True)
        with pytest.raises(openai.BadRequestError) as missing:
            client.vector_stores.retrieve("vs_nope")
        assert missing.value.body == {"message": "Vector store vs_nope not found"}, "400, no type or code"
        with pytest.raises(openai.NotFoundError):
            client.files.retrieve("file-nope")
        client.files.delete(fid)
        assert [f.id for f in client.vector_stores.files.list(store.id)] == [fid], "files.delete does not detach"
        assert client.vector_stores.retrieve(store.id).usage_bytes == 0
        client.vector_stores.update(store.id, metadata={"mine": "1"})
        other = client.files.create(file=("b.md", b"more text"), purpose="assistants").id
        assert client.vector_stores.files.create(store.id, file_id=other).status == "failed"
        emu.configure(embedder_down=True)
        third = client.files.create(file=("c.md", b"text"), purpose="assistants").id
        fresh = client.vector_stores.create(name="t")
        failed = client.vector_stores.files.create(fresh.id, file_id=third)
        assert failed.status == "failed" and failed.last_error is not None
        assert client.vector_stores.files.retrieve(third, vector_store_id=fresh.id).last_error is None
