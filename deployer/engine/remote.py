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
from collections.abc import Mapping
from typing import Any, get_args

from deployer.core.bundle import bundle
from deployer.errors import TargetError, Unreachable
from deployer.remote.messages import ApplyAnswer, ApplyFailure, ApplyRequest
from deployer.transport.base import Transport

# Test-only: names a stage at which the applier pauses (tests/faults/). Not a user setting.
TEST_PAUSE_ENV = "DEPLOYER_TEST_PAUSE_AT"


def build_script(name: str, params: Mapping[str, Any]) -> bytes:
    """The target module ``name`` bundled with what it imports, then a call of its ``main``."""
    encoded = base64.b64encode(json.dumps(params).encode()).decode()
    return (bundle(name) + "\n\nimport os\nos.chdir('/')\n"
            f"from deployer.remote import {name} as _entry, targetlib as _targetlib\n"
            f"_entry.main(_targetlib.decode_params({encoded!r}))\n").encode()


def isolated(python: str, *args: str) -> list[str]:
    """The argv that runs target-side Python: isolated from its caller's folder and environment."""
    return [python, "-I", *args] if args else [python, "-I", "-"]


def call(transport: Transport, name: str, params: Mapping[str, Any], python: str = "python3",
         timeout: float | None = 300) -> dict[str, Any]:
    """Run a target-side script and return its JSON answer, as it came (see ``call_applier``)."""
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


# The failure kinds the applier names (messages.ApplyFailure), each to itself: a kind read from
# an answer becomes the Literal, or nothing when the applier named another.
_FAILURES: dict[str, ApplyFailure] = {kind: kind for kind in get_args(ApplyFailure)}


def call_applier(transport: Transport, request: ApplyRequest, python: str = "python3",
                 timeout: float | None = 300) -> ApplyAnswer:
    """ONE applier exec with this bundle; its answer as a messages.ApplyAnswer."""
    return apply_answer(call(transport, "applier", request, python, timeout))


def apply_answer(raw: Mapping[str, Any]) -> ApplyAnswer:
    """The applier's JSON answer read as an ApplyAnswer: ``ok`` as it is true or not, ``done``
    as the list of steps, ``error`` as text; a ``kind`` it does not name is dropped (a failure
    of no kind the controller tells apart)."""
    answer: ApplyAnswer = {"ok": bool(raw.get("ok")), "done": [str(step) for step in raw.get("done") or []]}
    if "error" in raw:
        answer["error"] = str(raw["error"])
    if (kind := _FAILURES.get(str(raw.get("kind")))) is not None:
        answer["kind"] = kind
    return answer
