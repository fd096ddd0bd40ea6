"""Names and paths against patterns: the include/exclude and route globs ('**' spans folders), and the
fnmatch test the walk makes of every name it lists (the default ignores); and the names that nothing
downstream can carry (not UTF-8)."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from functools import lru_cache

from ingest.config import DEFAULT_IGNORES


@lru_cache(maxsize=512)
def _glob_regex(pattern: str) -> re.Pattern[str]:
    """'**' spans folders, '*' and '?' stay within one; a pattern without '/' matches any basename."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z", re.S)


def glob_match(path: str, pattern: str) -> bool:
    if "/" not in pattern and pattern != "**":
        return fnmatch.fnmatchcase(path.rsplit("/", 1)[-1], pattern)
    return bool(_glob_regex(pattern).match(path))


class NameMatcher:
    """A test of names against fnmatch patterns. It runs on every name in every pass, so the plain
    shapes ('x*', '*x', 'x') are string tests, only the others go to a regular expression, and a
    folder's names are first tested together: in most folders none can match, and one search of the
    joined names says so."""

    def __init__(self, patterns: Iterable[str]):
        prefixes, suffixes, exact, others = [], [], set(), []
        for p in patterns:
            if not any(c in p for c in "*?["):
                exact.add(p)
            elif p.endswith("*") and not any(c in p[:-1] for c in "*?["):
                prefixes.append(p[:-1])
            elif p.startswith("*") and not any(c in p[1:] for c in "*?["):
                suffixes.append(p[1:])
            else:
                others.append(p)
        rest = re.compile("|".join(fnmatch.translate(p) for p in others)) if others else None
        # The others only for a name that starts as one of them does (none may start with a wildcard).
        heads = tuple(re.split(r"[*?\[]", p, maxsplit=1)[0] for p in others)
        if "" in heads:
            heads = ("",)
        starts, ends = tuple(prefixes), tuple(suffixes)
        # What the joined names ("\0"-separated: no name holds a NUL) contain if any name can match.
        self._marks = (
            *("\0" + p for p in (*starts, *heads)),
            *(e + "\0" for e in ends),
            *("\0" + e + "\0" for e in exact),
        )

        def matches(name: str) -> bool:
            if name.startswith(starts) or name.endswith(ends) or name in exact:
                return True
            return rest is not None and name.startswith(heads) and rest.match(name) is not None

        self.matches = matches

    def __call__(self, name: str) -> bool:
        return self.matches(name)

    def none_in(self, names: list[str]) -> bool:
        """True when no name of the list can match: a few substring searches instead of a test each."""
        joined = "\0" + "\0".join(names) + "\0"
        return not any(map(joined.__contains__, self._marks))


is_ignored_name = NameMatcher(DEFAULT_IGNORES)


BAD_NAME = "the name is not valid UTF-8 (an old or foreign encoding): rename it to have it indexed"


def unencodable(name: str) -> bool:
    """True for a name whose bytes are not UTF-8: Python keeps them as lone surrogates, which
    nothing downstream (the manifest, the API, a JSON report) can carry."""
    if name.isascii():
        return False
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def printable(path: str) -> str:
    """The name with its undecodable bytes shown as \\xNN escapes."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
