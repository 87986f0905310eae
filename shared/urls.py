"""URLs as they may be written down: passwords and tokens replaced by ``***``."""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = ["REDACTED", "redact_url"]

REDACTED: Final = "***"
_SECRET_PARAM: Final = re.compile(r"pass|secret|token|key|auth|sig|credential", re.IGNORECASE)


def redact_url(url: str) -> str:
    """``url`` with the password of its user info and the values of secret-looking query
    parameters (``password``, ``token``, ``api_key``, ...) replaced by ``***``.

    ``redis://:pw@host:6379/0`` -> ``redis://:***@host:6379/0``; ``http://u:pw@h/`` ->
    ``http://u:***@h/``; a user name alone (often a token, as in ``https://TOKEN@host``) is
    redacted too. Strings that are not URLs come back unchanged.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if not parts.scheme or not parts.netloc:
        return url
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user, has_password, _ = userinfo.partition(":")
        userinfo = f"{user}:{REDACTED}" if has_password else REDACTED
        netloc = f"{userinfo}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_SECRET_PARAM.search(name) for name, _ in pairs):
            query = urlencode(
                [(n, REDACTED if _SECRET_PARAM.search(n) else v) for n, v in pairs], safe="*"
            )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
