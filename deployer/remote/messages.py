"""The messages between the controller and a target, one typed definition each.

Both ends import this module: the controller (engine/, core/) to build requests and read
answers, the target code (probe, applier, wrapper; bundled with this module, see
deployer/core/bundle.py) to read requests and build answers. Standard library only.

Every message travels as JSON, so each is a TypedDict: the data on the wire is plain dicts
and lists, and mypy checks both ends against the same definition. An answer comes from a
target, where a less-privileged user may have written what the probe reads: the controller
still checks values it acts on (core/facts.py), the types say what a well-formed one holds.

Families:
- the probe: ProbeRequest (controller -> target), ProbeAnswer (target -> controller);
- the applier: ApplyRequest, the bundle of one change (controller -> target), and ApplyAnswer;
- the run wrapper: RunRecord, one line of a job's ledger (wrapper -> ledger -> probe -> controller).
"""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict

# ---------------------------------------------------------------------------------------------
# The probe: ProbeRequest and ProbeAnswer (deployer/remote/probe.py, deployer/engine/session.py,
# deployer/core/facts.py).

# (probe messages: to be defined)


# ---------------------------------------------------------------------------------------------
# The applier: ApplyRequest and ApplyAnswer (deployer/remote/applier.py, deployer/core/plan.py,
# deployer/core/lifecycle.py, deployer/engine/session.py).

# The applier's bundle travels as it is built (core/plan.py ``apply_request``); keys the applier
# reads with a default are NotRequired (a minimal bundle, as tests/cron sends one, is valid).

ApplyKind = Literal["apply", "rollback", "destroy"]

# Why an apply failed (ApplyAnswer.kind): the controller tells a conflict (exit 3: changed under
# us) and a full disk (its own hint) from the rest.
ApplyFailure = Literal[
    "conflict",  # a crontab changed since the probe read it (compare-and-swap)
    "crontab",  # a crontab could not be read or installed
    "locked",  # another apply holds the deploy lock
    "unsafe-home",  # the home, releases or state folder is writable by others
    "user",  # a declared user or group does not exist
    "path",  # a path is not what it must be (a folder where a file belongs, a planted link...)
    "disk-full",  # ENOSPC or EDQUOT
    "io",  # any other OSError
    "bad-request",  # the bundle lacks what its own changes need (a bug of the controller's)
]


class ReleaseFileSpec(TypedDict):
    """One file of the release folder, written whole (base64 content)."""

    path: str  # relative to the release folder
    content: str  # base64
    mode: int
    owner: str | None
    secret: NotRequired[bool]  # a changed file that holds secrets: its old copy is not kept


class ReleaseSpec(TypedDict):
    """The release folder: created whole, or repaired file by file when it is there."""

    files: list[ReleaseFileSpec]
    remove: NotRequired[list[str]]  # files found in an existing release that it must not hold


class DirSpec(TypedDict):
    """A folder with its owner and mode; of an existing one only ``enforce`` is changed."""

    path: str
    mode: int
    owner: NotRequired[str | None]
    group: NotRequired[str | None]
    enforce: NotRequired[list[str]]  # of "mode", "owner", "group" (core/release.py EnsureDir.enforce)


class FileSpec(TypedDict):
    """A job's log or lock file: exists, regular, owner and mode; its content is the job's."""

    path: str
    mode: int
    owner: NotRequired[str | None]


class CrontabSpec(TypedDict):
    """One user's crontab: installed only if it still is ``expected`` (None: there is none)."""

    user: str
    expected: str | None
    text: str


class RecordsSpec(TypedDict):
    """A job's run records (its state folder) change hands to ``owner``."""

    path: str
    owner: str


# A renamed job's state folder or log: moved once, if the new place is free ("from" is a keyword).
MoveSpec = TypedDict("MoveSpec", {"from": str, "to": str})

# Rollback: written as rollback.json with the revision and the time added.
RollbackSpec = TypedDict("RollbackSpec", {"from": str, "blocks": dict[str, str | None]})


class DestroySpec(TypedDict, total=False):
    """What destroy removes once the crontabs lost our block; releases and current always."""

    files: list[str]
    trees: list[str]
    purge: bool  # --purge-logs: deployer's folders in its home, then the home if it made it


class ApplyRequest(TypedDict):
    """The bundle: one change of one target, made by one applier exec (remote/applier.py)."""

    project: str
    env: str
    deploy_home: str
    revision: NotRequired[str | None]  # the release going live; None for destroy
    kind: NotRequired[ApplyKind]  # recorded in the backup's index.json; "apply" when absent
    previous_revision: NotRequired[str | None]  # what the probe saw live (the backup records it)
    keep_releases: NotRequired[int]
    keep_backups: NotRequired[int | None]  # default: twice keep_releases
    release: NotRequired[ReleaseSpec | None]
    moves: NotRequired[list[MoveSpec]]
    dirs: NotRequired[list[DirSpec]]
    files: NotRequired[list[FileSpec]]
    remove_stale_locks: NotRequired[list[str]]
    crontabs: NotRequired[list[CrontabSpec]]
    records: NotRequired[list[RecordsSpec]]
    set_current: NotRequired[bool]
    rollback: NotRequired[RollbackSpec | None]  # rollback: held at an older revision on purpose
    destroy: NotRequired[DestroySpec | None]
    lock_wait: NotRequired[float]  # seconds to wait for the deploy lock (30)
    pause_at: NotRequired[str]  # TEST-ONLY: a stage to pause at (applier._stage, tests/faults/)


class ApplyAnswer(TypedDict):
    """The applier's one JSON line: what was done, and on failure why (nothing after it was done)."""

    ok: bool
    done: list[str]
    error: NotRequired[str]
    kind: NotRequired[ApplyFailure]


# ---------------------------------------------------------------------------------------------
# The run wrapper's ledger line: RunRecord (deployer/remote/wrapper.py writes it,
# deployer/remote/targetlib.py run_record reads it back, the controller shows it).

# (ledger messages: to be defined)
