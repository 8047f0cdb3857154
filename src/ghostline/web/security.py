"""What keeps other web pages and other machines out of the local web app.

The server holds a member's kit: whoever can talk to it can read the history and send
in the member's name. So every request must carry the per-run token (in the `t` query
parameter: the WebSocket and download links cannot carry a header), come for one of
the names this server answers to (`Host`: DNS rebinding), and, when the browser says
where it comes from (`Origin`, `Sec-Fetch-Site`), come from this same page. The
WebSocket upgrade must name its origin. Every answer forbids framing and any script,
style or connection that is not from the page itself, and sets no cookie.

The checks are pure functions of the request's headers, so they are tested without a
browser; `guard` is the aiohttp middleware that applies them.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import hdrs, web
from aiohttp.typedefs import Middleware

from ..display import quote
from . import hosts

log = logging.getLogger("ghostline.web")

TOKEN_PARAM = "t"

# default-src 'self' and nothing inline: no inline script, no style attribute, no eval.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


def new_token() -> str:
    """256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class Gate:
    """What this run accepts: its token, its port, and the IP addresses and names it
    answers to in `Host` and `Origin` (see `hosts`)."""

    token: str
    port: int
    addresses: frozenset[hosts.IPAddress]
    names: frozenset[str]

    @classmethod
    def for_address(
        cls,
        token: str,
        host: str,
        port: int,
        *,
        allow: Iterable[str | hosts.IPAddress] = (),
        local: Iterable[hosts.IPAddress] | None = None,
    ) -> Gate:
        """The gate of a server bound to `host`:`port`: the addresses it is reached on
        (`local`: this machine's, found when None and needed), `localhost` with the
        loopbacks, and the names and addresses in `allow` (--allow-host)."""
        if local is None and (address := hosts.as_address(host)) and address.is_unspecified:
            local = hosts.local_addresses()
        addresses = set(hosts.reachable(host, local or ()))
        names = {"localhost"} if addresses & hosts.LOOPBACK else set()
        for item in allow:
            if isinstance(item, str):
                names.add(item)
            else:
                addresses.add(item)
        return cls(token, port, frozenset(addresses), frozenset(names))

    def answers_to(self, host: str) -> bool:
        """Whether `host` (a Host header: name or address, and port) names this server."""
        try:
            parts = urlsplit("//" + host)
            port = parts.port or 80
        except ValueError:
            return False
        if parts.path or parts.query or parts.fragment or parts.username is not None:
            return False
        name = (parts.hostname or "").rstrip(".")
        address = hosts.as_address(name)
        known = address in self.addresses if address is not None else name in self.names
        return known and port == self.port

    def is_own_origin(self, origin: str) -> bool:
        scheme, _, host = origin.partition("://")
        return scheme.lower() == "http" and self.answers_to(host)

    def refusal(
        self,
        *,
        token: str | None,
        host: str | None,
        origin: str | None,
        fetch_site: str | None,
        websocket: bool,
    ) -> str | None:
        """Why a request must be refused (for the log: never quotes the token), or None."""
        if host is None or not self.answers_to(host):
            return "foreign Host header (DNS rebinding?)"
        if origin is not None and not self.is_own_origin(origin):
            return "foreign Origin (another web site in this browser?)"
        if websocket and origin is None:
            return "WebSocket without an Origin"
        if fetch_site is not None and fetch_site not in ("same-origin", "none"):
            return f"cross-site request (Sec-Fetch-Site: {fetch_site[:20]!r})"
        if token is None or not hmac.compare_digest(token.encode(), self.token.encode()):
            return "missing or wrong token"
        return None


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def guard(gate: Gate) -> Middleware:
    """The middleware: 403 for any request `gate` refuses, before any handler runs."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        websocket = request.headers.get(hdrs.UPGRADE, "").lower() == "websocket"
        reason = gate.refusal(
            token=request.query.get(TOKEN_PARAM),
            host=request.headers.get(hdrs.HOST),
            origin=request.headers.get(hdrs.ORIGIN),
            fetch_site=request.headers.get("Sec-Fetch-Site"),
            websocket=websocket,
        )
        if reason is not None:
            # The path only: the query holds the token (or a guess close to it).
            # Both come from whoever sent the request: shown, never interpreted.
            what = quote(f"{request.method} {request.path}", 100)
            log.warning("refused %s: %s", what, reason)
            return web.Response(status=403, text="403: refused by ghostline web\n")
        return await handler(request)

    return middleware


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """For `on_response_prepare`: every answer, refusals, files and the WebSocket
    upgrade included, gets the headers; none sets a cookie."""
    response.headers.update(SECURITY_HEADERS)
    response.headers.popall(hdrs.SET_COOKIE, None)
