"""The local web server: the page, its files, the WebSocket, uploads and downloads.

aiohttp on 127.0.0.1 (see `security` for what every request must show). The page is
three files shipped in the package (`static/`); `index.html` is the only one that is
filled in, with the token, in the two attributes that load the script and the style.
The WebSocket carries JSON both ways: the session's updates to the page, and what the
person does (send, load older messages, confirm a file, mark messages seen).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from importlib import resources
from typing import Any
from urllib.parse import quote

from aiohttp import WSMsgType, web

from ..files.assembly import DEFAULT_MAX_FILE_SIZE
from ..files.names import safe_file_name
from ..historypages import HistoryPages
from . import security
from .session import WebSession

log = logging.getLogger("ghostline.web")

STATIC = ("app.js", "app.css", "icon.svg")
_TYPES = {"js": "text/javascript", "css": "text/css", "svg": "image/svg+xml"}
MAX_UPLOAD = DEFAULT_MAX_FILE_SIZE  # what a receiver accepts (files.FileAssembly)
MAX_WS_MESSAGE = 4 << 20  # a text message is at most about 1 MiB of UTF-8

_TOO_LARGE = (
    "the file is larger than 1 GiB, the most a member accepts: split it, or send it another way"
)

SESSION = web.AppKey("session", WebSession)


def static_text(name: str) -> str:
    return resources.files("ghostline.web").joinpath("static", name).read_text("utf-8")


def make_app(session: WebSession, gate: security.Gate) -> web.Application:
    app = web.Application(
        middlewares=[security.guard(gate)], client_max_size=MAX_UPLOAD + (1 << 20)
    )
    app[SESSION] = session
    app.on_response_prepare.append(security.add_security_headers)
    index = static_text("index.html").replace("__TOKEN__", gate.token)

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=index, content_type="text/html", charset="utf-8")

    async def asset(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in STATIC:
            raise web.HTTPNotFound()
        body = resources.files("ghostline.web").joinpath("static", name).read_bytes()
        return web.Response(body=body, content_type=_TYPES[name.rpartition(".")[2]])

    app.router.add_get("/", page)
    app.router.add_get("/static/{name}", asset)
    app.router.add_get("/ws", websocket)
    app.router.add_post("/upload", upload)
    app.router.add_get("/files/{key}", download)
    return app


# -- WebSocket -------------------------------------------------------------------------


async def websocket(request: web.Request) -> web.WebSocketResponse:
    session = request.app[SESSION]
    ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=MAX_WS_MESSAGE)
    await ws.prepare(request)
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    session.attach(queue.put_nowait)  # before the snapshot: a duplicate, never a gap
    pages = session.reader()  # this page's place in the history

    async def write() -> None:
        try:
            await ws.send_json(await session.snapshot(pages))
            while True:
                await ws.send_json(await queue.get())
        except (asyncio.CancelledError, ConnectionError):
            raise
        except Exception as err:  # the page must not wait on a dead writer: close it
            log.error("ghostline web: could not update the page", exc_info=err)
            await ws.close()

    writer = asyncio.create_task(write(), name="ghostline-web-page")
    try:
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            try:
                command = json.loads(msg.data)
            except ValueError:
                continue
            if isinstance(command, dict):
                await _command(session, command, queue.put_nowait, pages)
    finally:
        session.detach(queue.put_nowait)
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await writer
    return ws


async def _command(
    session: WebSession, command: dict[str, Any], reply: Any, pages: HistoryPages
) -> None:
    """One thing the person did on the page. Anything malformed is ignored: only this
    server's own page talks here, and it sends nothing else."""
    kind = command.get("type")
    if kind == "send" and isinstance(command.get("text"), str):
        ref = command.get("ref")

        async def send() -> None:
            error = await session.send_text(command["text"])
            reply({"type": "ack", "ref": ref if isinstance(ref, int) else None, "error": error})

        session.spawn(send())
    elif kind == "older":
        session.spawn(_reply(reply, session.older(pages)))
    elif kind == "whole" and isinstance(command.get("id"), str):
        session.spawn(_reply(reply, session.whole(command["id"])))
    elif kind == "seen" and isinstance(command.get("id"), str):
        session.spawn(session.seen.save(command["id"]))
    elif kind == "file_send" and isinstance(command.get("id"), str):
        session.spawn(session.transfers.send(command["id"]))
    elif kind == "file_cancel" and isinstance(command.get("id"), str):
        session.transfers.cancel(command["id"])


async def _reply(reply: Any, answer: Any) -> None:
    reply(await answer)


# -- files -----------------------------------------------------------------------------


async def upload(request: web.Request) -> web.Response:
    """A file to send: streamed into the private spool (never held in memory), hashed,
    and offered (with its pad cost) for the person to confirm. Nothing is sealed here."""
    session = request.app[SESSION]
    name = request.query.get("name", "")[:1000]
    if request.content_length is not None and request.content_length > MAX_UPLOAD:
        return web.json_response({"error": _TOO_LARGE})
    try:
        path = session.transfers.new_upload()
    except ValueError as err:
        return web.json_response({"error": str(err)})
    size = 0
    try:
        with path.open("wb") as f:
            async for block in request.content.iter_chunked(1 << 16):
                size += len(block)
                if size > MAX_UPLOAD:
                    raise ValueError(_TOO_LARGE)
                f.write(block)  # a 64 KiB write to a local temporary file
        offer = await session.transfers.offer(path, name or "file")
    except ValueError as err:
        path.unlink(missing_ok=True)
        return web.json_response({"error": str(err)})
    except Exception as err:
        path.unlink(missing_ok=True)
        log.error("ghostline web: upload failed", exc_info=err)
        return web.json_response({"error": f"could not read the file: {err}"})
    return web.json_response(offer)


async def download(request: web.Request) -> web.StreamResponse:
    """A received, verified and saved file, by its row key (never a path from the page)."""
    session = request.app[SESSION]
    path = session.transfers.saved.get(request.match_info["key"])
    if path is None or not path.is_file():
        raise web.HTTPNotFound(text="no such saved file (moved or deleted?)")
    name = safe_file_name(path.name)
    ascii_name = name.encode("ascii", "replace").decode().replace("?", "_").replace('"', "_")
    response = web.FileResponse(path)
    response.content_type = "application/octet-stream"
    response.headers["Content-Disposition"] = (
        f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"
    )
    return response


# -- running ---------------------------------------------------------------------------


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the app is made so the Host check knows the
    port (0: the system picks one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(64)
    sock.setblocking(False)
    return sock


async def serve(session: WebSession, sock: socket.socket, gate: security.Gate) -> web.AppRunner:
    """Start serving on `sock`; returns the runner (`cleanup()` stops it). No access log:
    every request line carries the token."""
    runner = web.AppRunner(make_app(session, gate), access_log=None, handle_signals=False)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    return runner
