"""What a Zenodo record (a search hit) looks like, in today's shape and the older ones still served."""

from __future__ import annotations

import re
from typing import Any

_GITHUB = re.compile(r"github\.com/([^/\s]+)/([^/\s#?]+)", re.IGNORECASE)


def github_repository(hit: dict[str, Any]) -> tuple[str, str, str | None] | None:
    """``(owner, repo, ref)`` from a record's related identifiers (``.../tree/<ref>`` gives the ref)."""
    for related in (hit.get("metadata") or {}).get("related_identifiers") or []:
        identifier = str((related or {}).get("identifier") or "")
        match = _GITHUB.search(identifier)
        if not match:
            continue
        owner, repo = match.group(1), match.group(2).removesuffix(".git")
        rest = identifier[match.end():]
        ref = rest.split("/tree/", 1)[1].strip("/") if rest.startswith("/tree/") else None
        return owner, repo, ref or None
    return None


def file_keys(hit: dict[str, Any]) -> list[str]:
    """The names of a record's files, in the current (``key``) or older (``filename``) shape."""
    return [str(f.get("key") or f.get("filename") or "") for f in hit.get("files") or [] if isinstance(f, dict)]
