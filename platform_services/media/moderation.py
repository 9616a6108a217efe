"""Moderation as a pipeline step behind one interface, and the optional virus scan.

:class:`TextRules` is the default: word rules on title, description and tags (``block`` terms
block, ``review`` terms hold for a human). Other moderators (an image classifier on sampled
frames) implement :class:`Moderator`; :func:`combine` keeps the strictest verdict. A held or
blocked video never reaches feeds or the index: the catalog admits only ``approved`` ones.
"""

from __future__ import annotations

import re
import socket
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from platform_services.storage.models import Moderation

ORDER = (Moderation.APPROVED, Moderation.NEEDS_REVIEW, Moderation.BLOCKED)
# Deliberately short defaults; a deployment extends them.
BLOCK_TERMS = ("child porn", "cp links", "buy followers now", "snuff")
REVIEW_TERMS = ("nsfw", "nude", "nudity", "gore", "onlyfans", "18+", "xxx", "weapon sale",
                "drugs for sale", "self harm")


@dataclass(frozen=True)
class Verdict:
    status: Moderation
    reason: str | None = None
    scores: dict[str, float] = field(default_factory=dict)


class Moderator(Protocol):
    def review(self, title: str, description: str, tags: list[str],
               frames: list[Path]) -> Verdict: ...


def _pattern(terms: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile(r"(?<![\w])(" + "|".join(re.escape(t) for t in terms) + r")(?![\w])",
                      re.IGNORECASE)


@dataclass(frozen=True)
class TextRules:
    """Whole-word rules on the video's text; the first matching term is the reason."""

    block: tuple[str, ...] = BLOCK_TERMS
    hold: tuple[str, ...] = REVIEW_TERMS

    def review(self, title: str, description: str, tags: list[str],
               frames: list[Path]) -> Verdict:
        text = " ".join([title, description, *tags, *(f"#{t}" for t in tags)])
        for terms, status in ((self.block, Moderation.BLOCKED),
                              (self.hold, Moderation.NEEDS_REVIEW)):
            m = _pattern(terms).search(text) if terms else None
            if m:
                return Verdict(status, f"text rule: {m.group(1).lower()!r}")
        return Verdict(Moderation.APPROVED)


def combine(verdicts: list[Verdict]) -> Verdict:
    """The strictest verdict, with every moderator's scores."""
    worst = max(verdicts, key=lambda v: ORDER.index(v.status))
    scores = {k: v for verdict in verdicts for k, v in verdict.scores.items()}
    return Verdict(worst.status, worst.reason, scores)


class VirusFound(Exception):
    """ClamAV found something; the message names it."""


def clamd_scan(url: str, path: Path, timeout_s: float = 30.0) -> None:
    """Stream ``path`` to clamd (``INSTREAM``) at ``unix:///sock`` or ``tcp://host:port``;
    :class:`VirusFound` when it answers ``FOUND``. Network errors propagate (retried)."""
    u = urlsplit(url)
    if u.scheme == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        address: object = u.path
    elif u.scheme == "tcp":
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        address = (u.hostname, u.port or 3310)
    else:
        raise ValueError(f"clamd_url: expected unix:// or tcp://, got {url!r}")
    with sock:
        sock.settimeout(timeout_s)
        sock.connect(address)
        sock.sendall(b"zINSTREAM\0")
        with open(path, "rb") as f:
            while chunk := f.read(1 << 16):
                sock.sendall(struct.pack(">I", len(chunk)) + chunk)
        sock.sendall(struct.pack(">I", 0))
        reply = b""
        while not reply.endswith(b"\0"):
            part = sock.recv(4096)
            if not part:
                break
            reply += part
    answer = reply.rstrip(b"\0").decode(errors="replace")
    if answer.endswith("FOUND"):
        raise VirusFound(answer.removeprefix("stream: ").removesuffix(" FOUND"))
    if not answer.endswith("OK"):
        raise ConnectionError(f"clamd: unexpected reply {answer!r}")
