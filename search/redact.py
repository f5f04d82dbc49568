"""Secrets stay out of what tune-run prints, logs or stores (cheap to import: no Ray, no MLflow)."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

_CREDENTIALS = re.compile(r"//[^/@\s]+@")


def redact(uri: str | None) -> str:
    """The URI with any user, password or token replaced by ***, fit to print or log."""
    if not uri:
        return ""
    parts = urlsplit(uri)
    if parts.password is None and parts.username is None:
        return uri
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"***@{host}"))


def redact_text(text: str) -> str:
    """`text` with the credentials of every URL in it replaced by ***."""
    return _CREDENTIALS.sub("//***@", text)


def first_line(error: BaseException, limit: int = 300) -> str:
    """An exception as one redacted line, fit for a warning."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {redact_text(lines[0] if lines else '')[:limit]}"
