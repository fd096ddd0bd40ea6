"""GET /version without the openai SDK: a first run asks who the server is while the SDK (half a second
to import) is still being imported, so the answer is there when the first upload is ready to go."""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None  # as the SDK does not follow one: the key is never sent on to another address


_OPENER = urllib.request.build_opener(_NoRedirects)


def ask(base_url: str, api_key: str, timeout: float) -> tuple[int, object] | None:
    """(HTTP status, the body as JSON or None) of GET {base_url}version; None when no answer came (no
    connection, TLS, a timeout, a garbled reply): the SDK then asks again, as it would have."""
    request = urllib.request.Request(
        base_url.rstrip("/") + "/version",
        headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json"},
    )
    try:
        with _OPENER.open(request, timeout=timeout) as reply:
            status, raw = reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except (OSError, ValueError, http.client.HTTPException):
        return None
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, None
