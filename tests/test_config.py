"""The config file becomes typed settings, and every mistake in it is named by file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.config import Root, Settings
from ingest.configfile import find_config, load
from ingest.errors import ConfigError
from ingest.limits import MAX_FILE_SIZE, SUPPORTED_TYPES
from tests.conftest import as_unprivileged

EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "ingest.example.toml"


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """An empty current folder, with the config and state locations pointed inside the test."""
    for name in ("INGEST_CONFIG", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


def write_config(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def config_error(tmp_path: Path, text: str) -> str:
    path = write_config(tmp_path / "conf" / "ingest.toml", text)
    with pytest.raises(ConfigError) as info:
        load(str(path))
    message = str(info.value)
    assert str(path) in message, "every config error names the file"
    return message


def test_full_config_becomes_settings(workdir, tmp_path):
    path = write_config(
        tmp_path / "conf" / "ingest.toml",
        """
backend = "local"
state_dir = "state"
upload_concurrency = 4
index_timeout = 30
max_delete_fraction = 0.5
max_delete_floor = 2

[limits]
max_size = "100MB"
types = ["md", ".PDF"]

[[roots]]
path = "../docs"
store = "handbook"
include = ["**/*.md"]
exclude = ["drafts/**"]

[[roots]]
path = "/srv/share/hr"
ignore_defaults = false

[[stores]]
name = "handbook"
paths = ["policies/**"]
max_files = 50
chunking = { type = "static", max_chunk_size_tokens = 600, chunk_overlap_tokens = 200 }
expires_after_days = 30
attributes = { team = "hr", year = 2024 }
""",
    )
    settings = load(str(path))

    assert settings.source == str(path)
    assert settings.backend == "local"
    assert settings.state_dir == tmp_path / "conf" / "state", "relative paths are relative to the config file"
    assert settings.max_size == 100 * 1024**2
    assert settings.types == (".md", ".PDF")
    assert (settings.upload_concurrency, settings.index_timeout) == (4, 30.0)
    assert (settings.max_delete_fraction, settings.max_delete_floor) == (0.5, 2)
    docs, hr = settings.roots
    assert docs == Root(path=tmp_path / "docs", store="handbook", include=("**/*.md",), exclude=("drafts/**",))
    assert docs.key == str(tmp_path / "docs"), "'..' is folded so the root key is the folder's real name"
    assert (hr.store, hr.ignore_defaults, hr.include) == ("hr", False, ("**",))
    spec = settings.store_spec("handbook")
    assert spec.paths == ("policies/**",) and spec.max_files == 50 and spec.expires_after_days == 30
    assert spec.chunking == {"type": "static", "static": {"max_chunk_size_tokens": 600, "chunk_overlap_tokens": 200}}
    assert dict(spec.attributes) == {"team": "hr", "year": 2024}
    assert settings.store_spec("elsewhere").max_files == 10_000, "unconfigured stores get the defaults"


def test_no_config_file_gives_the_defaults(workdir, tmp_path):
    settings = load(None)
    assert settings.source == "defaults"
    assert settings.roots == () and settings.backend == "auto"
    assert settings.state_dir == tmp_path / "xdg-state" / "ingest"
    assert settings.max_size == MAX_FILE_SIZE and settings.types == SUPPORTED_TYPES


def test_the_shipped_example_config_loads_as_the_defaults(workdir):
    settings = load(str(EXAMPLE))
    defaults = Settings()
    assert settings.roots == () and settings.stores == ()
    for name in (
        "backend",
        "max_size",
        "types",
        "upload_concurrency",
        "index_timeout",
        "max_delete_fraction",
        "max_delete_floor",
        "server_error_retries",
        "request_retries",
        "request_timeout",
    ):
        assert getattr(settings, name) == getattr(defaults, name), name


def test_base_url_falls_back_to_the_environment(workdir, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    path = write_config(tmp_path / "ingest.toml", "")
    assert load(str(path)).base_url == "http://127.0.0.1:9/v1"
    write_config(path, 'base_url = "http://example.test/v1"')
    assert load(str(path)).base_url == "http://example.test/v1", "the file wins over the environment"


@pytest.mark.parametrize(
    "text, key",
    [
        ('bakend = "local"', "bakend"),
        ('[limits]\nmax_sizes = "1MB"', "limits.max_sizes"),
        ('[[roots]]\npath = "docs"\npth = "x"', "roots[0].pth"),
        ('[[stores]]\nname = "a"\n[[stores]]\nname = "b"\nmax_file = 3', "stores[1].max_file"),
        ('[[stores]]\nname = "a"\nchunking = { type = "static", overlap = 10 }', "stores[0].chunking.overlap"),
    ],
)
def test_an_unknown_key_is_named_with_its_dotted_path(workdir, tmp_path, text, key):
    message = config_error(tmp_path, text)
    assert f": {key}: unknown key" in message


def test_an_unknown_key_lists_the_keys_allowed_there(workdir, tmp_path):
    message = config_error(tmp_path, 'bakend = "local"')
    assert "allowed here:" in message and "backend" in message and "roots" in message


@pytest.mark.parametrize(
    "text, key, close",
    [
        ('[[root]]\npath = "docs"', "root", "roots"),
        (
            '[[stores]]\nname = "a"\nchunking = { type = "static", max_chunk_size = 10 }',
            "stores[0].chunking.max_chunk_size",
            "max_chunk_size_tokens",
        ),
    ],
)
def test_an_unknown_key_names_the_closest_allowed_one(workdir, tmp_path, text, key, close):
    message = config_error(tmp_path, text)
    assert f": {key}: unknown key: did you mean {close!r}?" in message


def test_an_unknown_key_far_from_any_allowed_one_guesses_nothing(workdir, tmp_path):
    assert "did you mean" not in config_error(tmp_path, 'colour = "blue"')


@pytest.mark.parametrize(
    "text, key, words",
    [
        ('backend = "azure"', "backend", "must be one of auto, local, openai"),
        ('upload_concurrency = "8"', "upload_concurrency", "whole number from 1 to 64"),
        ("upload_concurrency = 0", "upload_concurrency", "whole number from 1 to 64"),
        ("max_delete_floor = true", "max_delete_floor", "whole number"),
        ("max_delete_fraction = 2", "max_delete_fraction", "number from 0 to 1"),
        ("state_dir = 3", "state_dir", "must be a string"),
        ('roots = "docs"', "roots", "array of tables ([[roots]])"),
        ('limits = "big"', "limits", "must be a table"),
        ('[[roots]]\nstore = "x"', "roots[0].path", "is required"),
        ('[[roots]]\npath = "d"\nignore_defaults = "yes"', "roots[0].ignore_defaults", "true or false"),
        ('[[roots]]\npath = "d"\ninclude = [1, 2]', "roots[0].include", "list of strings"),
        ('[[stores]]\npaths = ["x"]', "stores[0].name", "is required"),
        ('[[stores]]\nname = "a"\nattributes = "hr"', "stores[0].attributes", "must be a table"),
        ('[[stores]]\nname = "a"\nexpires_after_days = 0', "stores[0].expires_after_days", "from 1 to 365"),
        ('[[stores]]\nname = "a"\nattributes = { team = ["a"] }', "stores[0].attributes.team", "a number or a bool"),
        ('[limits]\ntypes = ["xlsx"]', "limits.types", "'.xlsx' is not a type file_search accepts"),
    ],
)
def test_an_ill_typed_value_is_named_with_its_dotted_path(workdir, tmp_path, text, key, words):
    message = config_error(tmp_path, text)
    assert f": {key}: " in message
    assert words in message


def test_more_than_ten_static_attributes_is_refused(workdir, tmp_path):
    attributes = ", ".join(f"k{i} = {i}" for i in range(11))
    message = config_error(tmp_path, f'[[stores]]\nname = "a"\nattributes = {{ {attributes} }}')
    assert "stores[0].attributes: at most 10" in message


@pytest.mark.parametrize("key", ["path", "folder", "ext", "mtime", "sha256", "root"])
def test_a_static_attribute_named_like_one_ingest_sets_is_refused_by_name(workdir, tmp_path, key):
    message = config_error(tmp_path, f'[[stores]]\nname = "a"\nattributes = {{ team = "hr", {key} = "x" }}')
    assert f"stores[0].attributes.{key}: '{key}' is an attribute ingest sets on every file itself" in message
    assert "another name" in message


def test_two_stores_with_one_name_are_refused(workdir, tmp_path):
    message = config_error(tmp_path, '[[stores]]\nname = "a"\n[[stores]]\nname = "a"')
    assert "two stores share a name" in message


def test_invalid_toml_names_the_file(workdir, tmp_path):
    message = config_error(tmp_path, "backend = 'local\n")
    assert "not valid TOML" in message


def test_an_unreadable_config_file_is_a_sentence_not_a_traceback(shared_dir):
    path = write_config(shared_dir / "ingest.toml", 'backend = "local"')
    path.chmod(0o000)

    def attempt():
        try:
            load(str(path))
        except ConfigError as exc:
            return str(exc)
        return None

    message = as_unprivileged(attempt)
    assert message is not None
    assert str(path) in message and "cannot read" in message


@pytest.mark.parametrize(
    "value, expected",
    [
        ('"100MB"', 100 * 1024**2),
        ('"10 mb"', 10 * 1024**2),
        ('"1.5KiB"', 1536),
        ('"512MB"', MAX_FILE_SIZE),
        ('"512MiB"', MAX_FILE_SIZE),
        ('"513MB"', None),
        ('"2GB"', None),
        ('"100M"', None),
        ('"lots"', None),
        ("2048", 2048),
        ("0", None),
        ("1.5", None),
    ],
)
def test_max_size_accepts_byte_counts_and_sizes(workdir, tmp_path, value, expected):
    path = write_config(tmp_path / "ingest.toml", f"[limits]\nmax_size = {value}")
    if expected is None:
        with pytest.raises(ConfigError, match=r"limits\.max_size"):
            load(str(path))
    else:
        assert load(str(path)).max_size == expected


@pytest.mark.parametrize(
    "chunking, expected",
    [
        ('"auto"', None),
        ('{ type = "auto" }', None),
        (
            '{ type = "static" }',
            {"type": "static", "static": {"max_chunk_size_tokens": 800, "chunk_overlap_tokens": 400}},
        ),
        (
            '{ type = "static", max_chunk_size_tokens = 100, chunk_overlap_tokens = 0 }',
            {"type": "static", "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 0}},
        ),
    ],
)
def test_valid_chunking(workdir, tmp_path, chunking, expected):
    path = write_config(tmp_path / "ingest.toml", f'[[stores]]\nname = "a"\nchunking = {chunking}')
    assert load(str(path)).store_spec("a").chunking == expected


@pytest.mark.parametrize(
    "chunking, key, words",
    [
        ('"fixed"', "stores[0].chunking", 'must be "auto" or'),
        ('{ type = "dynamic" }', "stores[0].chunking", 'must be "auto" or'),
        (
            '{ type = "static", max_chunk_size_tokens = 50 }',
            "stores[0].chunking.max_chunk_size_tokens",
            "from 100 to 4096",
        ),
        (
            '{ type = "static", max_chunk_size_tokens = 5000 }',
            "stores[0].chunking.max_chunk_size_tokens",
            "from 100 to 4096",
        ),
        (
            '{ type = "static", max_chunk_size_tokens = 600, chunk_overlap_tokens = 301 }',
            "stores[0].chunking.chunk_overlap_tokens",
            "half of max_chunk_size_tokens",
        ),
    ],
)
def test_invalid_chunking_is_explained(workdir, tmp_path, chunking, key, words):
    message = config_error(tmp_path, f'[[stores]]\nname = "a"\nchunking = {chunking}')
    assert f": {key}: " in message and words in message


# find_config ------------------------------------------------------------------------------------


@pytest.fixture
def four_configs(workdir, tmp_path, monkeypatch):
    """A config at every place find_config looks, each saying which one it is."""
    places = {
        "explicit": tmp_path / "explicit.toml",
        "env": tmp_path / "env.toml",
        "cwd": workdir / "ingest.toml",
        "xdg": tmp_path / "xdg-config" / "ingest" / "ingest.toml",
    }
    for path in places.values():
        write_config(path, "")
    monkeypatch.setenv("INGEST_CONFIG", str(places["env"]))
    return places


def test_find_config_prefers_the_explicit_path(four_configs):
    assert find_config(str(four_configs["explicit"])) == four_configs["explicit"]


def test_find_config_then_ingest_config(four_configs):
    assert find_config(None) == four_configs["env"]


def test_find_config_then_the_current_folder(four_configs, monkeypatch):
    monkeypatch.delenv("INGEST_CONFIG")
    assert find_config(None).resolve() == four_configs["cwd"].resolve()


def test_find_config_then_the_xdg_config_dir(four_configs, monkeypatch):
    monkeypatch.delenv("INGEST_CONFIG")
    four_configs["cwd"].unlink()
    assert find_config(None) == four_configs["xdg"]


def test_find_config_finds_nothing_in_an_empty_world(workdir):
    assert find_config(None) is None


@pytest.mark.parametrize("source", ["explicit", "env"])
def test_a_named_config_that_is_missing_is_an_error(workdir, tmp_path, monkeypatch, source):
    missing = tmp_path / "nowhere.toml"
    write_config(workdir / "ingest.toml", "")  # must not be used instead
    if source == "env":
        monkeypatch.setenv("INGEST_CONFIG", str(missing))
    with pytest.raises(ConfigError, match="config file not found") as info:
        find_config(str(missing) if source == "explicit" else None)
    assert str(missing) in str(info.value)


# with_paths -------------------------------------------------------------------------------------


@pytest.fixture
def configured(tmp_path) -> Settings:
    return Settings(
        roots=(
            Root(path=tmp_path / "docs", store="handbook", exclude=("drafts/**",)),
            Root(path=tmp_path / "hr", store="people"),
        )
    )


def test_with_paths_keeps_the_configured_root_a_path_falls_in(configured, tmp_path):
    settings = configured.with_paths([tmp_path / "docs" / "guides"])
    assert settings.roots == (configured.roots[0],), "its store and excludes still apply"


def test_with_paths_makes_a_new_root_named_after_the_folder(configured, tmp_path):
    settings = configured.with_paths([tmp_path / "reports"])
    assert settings.roots == (Root(path=tmp_path / "reports", store="reports"),)


def test_with_paths_folds_dot_dot_onto_the_configured_root(configured, tmp_path, monkeypatch):
    (tmp_path / "docs").mkdir()
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    settings = configured.with_paths([Path("../docs")])
    assert settings.roots == (configured.roots[0],), "another spelling of the root must not upload it twice"


def test_with_paths_names_each_root_once(configured, tmp_path):
    settings = configured.with_paths([tmp_path / "docs" / "a", tmp_path / "docs", tmp_path / "docs" / "b"])
    assert [r.store for r in settings.roots] == ["handbook"]


def test_with_paths_relative_to_the_current_folder(configured, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = configured.with_paths([Path("scans/")])
    assert settings.roots == (Root(path=tmp_path / "scans", store="scans"),)


def test_a_working_folder_this_user_cannot_look_into_is_not_a_config_error(tmp_path, shared_dir, monkeypatch):
    private = tmp_path / "private"
    private.mkdir(mode=0o700)  # like /root for `sudo -u ingest ingest sync /srv/share`
    monkeypatch.chdir(private)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(shared_dir / "config"))
    monkeypatch.delenv("INGEST_CONFIG", raising=False)
    assert as_unprivileged(lambda: load(None).roots) == ()
