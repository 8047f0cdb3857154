"""The relay stays blind: it never imports pad, key, state or client code."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import ghostline

FORBIDDEN = ("kit", "seal", "store", "member", "entropy", "payload", "client", "tui")
ALLOWED = {"wire", "envelope", "errors", "paths", "relay", "cli"}
SRC = Path(ghostline.__file__).parent
CLI = ("relay.py", "cluster.py")  # the relay's command-line modules
CLI_MODULES = {f.removesuffix(".py") for f in CLI}


def test_importing_the_relay_loads_no_pad_code():
    code = (
        "import sys, json, ghostline.cli.relay, ghostline.relay, ghostline.relay.server, "
        "ghostline.relay.sqlite_store, ghostline.relay.rooms, ghostline.relay.cluster, "
        "ghostline.cli.cluster;"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('ghostline'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout)
    bad = [m for m in loaded if (m.split(".") + [""])[1] in FORBIDDEN]
    assert not bad, f"the relay imported {bad}"


def test_no_module_of_the_relay_names_pad_code_in_an_import():
    files = [*sorted((SRC / "relay").rglob("*.py")), *(SRC / "cli" / f for f in CLI)]
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
            for name in names:
                parts = name.split(".")
                if parts[0] == "ghostline" and len(parts) > 1:
                    assert parts[1] in ALLOWED or parts[1] in {"__init__"}, f"{path}: {name}"
                    if parts[1] == "cli":
                        assert len(parts) < 3 or parts[2] in {*CLI_MODULES, "__init__"}, name
