"""What one web page would receive from a `WebSession`, for the tests that drive the
session in this process (no browser)."""

from __future__ import annotations

from typing import Any

from ghostline.web.session import WebSession


class Page:
    def __init__(self, session: WebSession) -> None:
        self.got: list[dict[str, Any]] = []
        session.attach(self.got.append)

    def lines(self) -> list[dict[str, Any]]:
        return [m["line"] for m in self.got if m["type"] == "line"]

    def shown(self, kind: str) -> bool:
        """Whether a message of this kind came yet."""
        return any(m["type"] == kind for m in self.got)

    def last(self, kind: str) -> dict[str, Any]:
        return [m for m in self.got if m["type"] == kind][-1]
