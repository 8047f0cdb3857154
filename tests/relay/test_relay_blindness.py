"""The relay stays blind: it never imports pad, key, state or client code."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import ghostline

# What the relay may load: the frame codec, the public header layout, the handshake and
# the wire's reject rules, and plumbing that knows nothing of pads or keys. Everything
# else (pad/, state/, client/, the apps, the kit format, payloads) is out of bounds.
ALLOWED = (
    "ghostline.protocol.frames",
    "ghostline.protocol.envelope",
    "ghostline.protocol.handshake",
    "ghostline.protocol.rules",
    "ghostline.errors",
    "ghostline.paths",
    "ghostline.fsutil",
    "ghostline.tlspin",
    "ghostline.display",
    "ghostline.relay",
    "ghostline.cli.relay",
    "ghostline.cli.relayops",
    "ghostline.cli.cluster",
    "ghostline.cli.params",
)
PACKAGES = {"ghostline", "ghostline.protocol", "ghostline.cli"}  # their __init__ only
SRC = Path(ghostline.__file__).parent


def is_module(dotted: str) -> bool:
    path = SRC.parent.joinpath(*dotted.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def allowed(module: str) -> bool:
    return module in PACKAGES or any(module == ok or module.startswith(ok + ".") for ok in ALLOWED)


def test_importing_the_relay_loads_no_pad_code():
    code = (
        "import sys, json, ghostline.cli.relay, ghostline.relay, ghostline.relay.server, "
        "ghostline.relay.sqlite_store, ghostline.relay.rooms, ghostline.relay.cluster, "
        "ghostline.cli.cluster;"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('ghostline'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout)
    bad = [m for m in loaded if not allowed(m)]
    assert not bad, f"the relay imported {bad}"


def test_no_module_of_the_relay_names_pad_code_in_an_import():
    files = [*sorted((SRC / "relay").rglob("*.py")), SRC / "cli" / "relay.py"]
    files += [SRC / "cli" / "cluster.py", SRC / "cli" / "relayops.py"]
    assert len(files) > 3
    for path in files:
        package = ".".join(path.relative_to(SRC.parent).with_suffix("").parts[:-1])
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = package.split(".")
                if node.level:
                    base = base[: len(base) - node.level + 1]
                    module = ".".join([*base, node.module] if node.module else base)
                else:
                    module = node.module or ""
                names = [module] + [f"{module}.{a.name}" for a in node.names]
            if isinstance(node, ast.ImportFrom):
                # `from X import a, b`: X must be allowed, and so must a and b where they
                # are modules (not names defined in X)
                names = names[:1] + [n for n in names[1:] if is_module(n)]
            for name in names:
                if name.startswith("ghostline"):
                    assert allowed(name), f"{path}: {name}"
