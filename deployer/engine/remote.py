"""Send a piece of target-side code (probe, applier) over a transport and read its answer.

The code goes over stdin to ``python3 -I -``: one exec, no file left behind, nothing to
install on the target. Its parameters travel inside the script, base64-encoded JSON.

Isolated (``-I``), because it often runs as root in a folder someone else owns: no current
folder on ``sys.path`` (a ``base64.py`` where the operator stands would be imported as root),
no user site, no ``PYTHON*`` variables. It then works from ``/``, whatever folder the
transport started it in.
"""

from __future__ import annotations

import base64
import json
import os
from functools import cache
from importlib import resources
from typing import Any

from deployer.errors import TargetError, Unreachable
from deployer.transport.base import Transport

INLINE_MARK = "# <targetlib>"
# Test-only: names a stage at which the applier pauses (tests/faults/). Not a user setting.
TEST_PAUSE_ENV = "DEPLOYER_TEST_PAUSE_AT"


@cache
def script_source(name: str) -> str:
    """safefs's and targetlib's sources inlined into the named target-side module's."""
    package = resources.files("deployer.remote")
    lib = package.joinpath("safefs.py").read_text(encoding="utf-8") + "\n\n" + package.joinpath("targetlib.py").read_text(encoding="utf-8")
    body = package.joinpath(f"{name}.py").read_text(encoding="utf-8")
    if INLINE_MARK not in body:
        raise RuntimeError(f"deployer/remote/{name}.py lacks the '{INLINE_MARK}' line")
    return body.replace(INLINE_MARK, lib, 1)


def build_script(name: str, params: dict[str, Any]) -> bytes:
    encoded = base64.b64encode(json.dumps(params).encode()).decode()
    return (script_source(name) + f"\n\nos.chdir('/')\nmain(decode_params({encoded!r}))\n").encode()


def isolated(python: str, *args: str) -> list[str]:
    """The argv that runs target-side Python: isolated from its caller's folder and environment."""
    return [python, "-I", *args] if args else [python, "-I", "-"]


def call(transport: Transport, name: str, params: dict[str, Any], python: str = "python3",
         timeout: float | None = 300) -> dict[str, Any]:
    """Run a target-side script and return its JSON answer."""
    if name == "applier" and os.environ.get(TEST_PAUSE_ENV):
        # TEST-ONLY (tests/faults/): the applier stops at this named stage until the test
        # releases it; see _stage in deployer/remote/applier.py. Never set it in production.
        params = {**params, "pause_at": os.environ[TEST_PAUSE_ENV]}
    result = transport.run(isolated(python), build_script(name, params), timeout=timeout)
    if result.exit_code == 127 or (b"not found" in result.stderr and b"python" in result.stderr and not result.stdout):
        raise Unreachable(f"{python} is not installed on the target", hint="deployer needs python3 and cron on every target")
    last = result.stdout.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
    try:
        answer = json.loads(last[0])
    except ValueError:
        detail = result.stderr_tail() or result.stdout.decode("utf-8", "replace").strip()[-500:] or f"exit code {result.exit_code}"
        if result.exit_code == 1 and "sudo" in detail and "password" in detail:
            raise TargetError("sudo asked for a password", hint="give the user NOPASSWD sudo, or connect as the run-as user") from None
        raise TargetError(f"the {name} failed on the target: {detail}") from None
    if not isinstance(answer, dict):
        raise TargetError(f"the {name} answered something unexpected: {last[0][:200]}")
    return answer
