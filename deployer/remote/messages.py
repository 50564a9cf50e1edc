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

from typing import Literal, NotRequired, Required, TypedDict, get_args

# ---------------------------------------------------------------------------------------------
# The probe: ProbeRequest and ProbeAnswer (deployer/remote/probe.py, deployer/engine/session.py,
# deployer/core/facts.py).

# (probe messages: to be defined)


# ---------------------------------------------------------------------------------------------
# The applier: ApplyRequest and ApplyAnswer (deployer/remote/applier.py, deployer/core/plan.py,
# deployer/core/lifecycle.py, deployer/engine/session.py).

# (applier messages: to be defined)


# ---------------------------------------------------------------------------------------------
# The run wrapper's ledger line: RunRecord (deployer/remote/wrapper.py writes it,
# deployer/remote/targetlib.py run_record reads it back, the controller shows it).

# What a run came to: the words the wrapper writes in a ledger line's ``outcome``, defined once
# (RUN_OUTCOMES is the same list at run time: targetlib checks lines read back against it, the
# controller's deployer/core/outcomes.py names each).
RunOutcome = Literal["success", "failure", "timeout", "skipped-locked", "crashed"]
RUN_OUTCOMES: tuple[RunOutcome, ...] = get_args(RunOutcome)

# How a job takes its lock: "forbid" (the default) records a run that finds it held as
# skipped-locked; "allow" lets runs overlap.
Concurrency = Literal["forbid", "allow"]


class RetentionSpec(TypedDict):
    """How much history the wrapper keeps of a job (a job spec file's ``retention``)."""

    runs: int  # ledger lines kept
    days: int  # ledger lines younger than this kept
    log_size: int  # bytes: the log is rotated past this
    log_files: int  # rotated logs kept
    run_logs: NotRequired[int]  # per-run logs kept; written only when on, so a job without keeps its bytes


class JobSpecFile(TypedDict):
    """``<release>/jobs/<id>.json``: what the wrapper needs to run job <id> (controller -> wrapper;
    written by deployer/core/release.py job_spec, read by deployer/remote/wrapper.py)."""

    id: str
    project: str
    env: str
    description: str
    schedule: str
    script: str | None  # a file under the release's scripts/, run with the wrapper's python; or
    command: str | None  # a program, looked up in PATH
    args: list[str]
    run_as: str | None  # the job's user; None: whoever runs the wrapper
    log_file: str
    lock_file: str
    state_dir: str  # ledger.jsonl, running/, runs/
    timeout: int  # seconds
    concurrency: Concurrency
    workdir: str | None  # None: the job user's home when root starts it for another user, else state_dir
    env_file: str | None  # relative to the release: env/<id>.env
    retention: RetentionSpec


class RunExtra(TypedDict, total=False):
    """The fields a run adds to its ledger line when they apply."""

    log: str  # its own log, relative to the state folder (retention.run_logs)
    lock_holder: str  # skipped-locked: what the lock file says of the run that holds it
    signal: int  # crashed: the signal that stopped the job
    error: str  # could not start (exit code 127): why


class RunRecord(RunExtra):
    """One line of ``state/<job>/ledger.jsonl``, appended by the wrapper when a run ends
    (JSON with sorted keys, one write per line)."""

    run_id: str  # 16 hex digits, also the job's DEPLOYER_RUN_ID
    job: str
    project: str
    env: str
    start: str  # UTC, 2024-05-01T02:00:00.123Z: such strings sort as times
    end: str
    duration: float  # seconds, to the millisecond
    exit_code: int | None  # the job's; 124 on timeout, 128 + signal when crashed; None: skipped-locked
    outcome: RunOutcome
    host: str
    pid: int | None  # the job's process; None when it never started
    user: str  # whom the job ran as
    revision: str
    trigger: str  # cron | manual


class RunningMarker(TypedDict):
    """``state/<job>/running/<run id>.json``: a run that started and has not ended (the wrapper
    writes it once the job is started, removes it when the run is recorded)."""

    run_id: str
    start: str
    pid: int  # the job's process
    wrapper_pid: int
    host: str
    revision: str
    trigger: str
    log: NotRequired[str]  # its own log, as in RunRecord


class RunFound(TypedDict, total=False):
    """A ledger line or running marker as the probe read it back (targetlib.run_record): the
    job's user may have written it under an earlier release, a full disk may have cut it, an
    older wrapper may have written fewer fields. Only the fields of RunRecord and RunningMarker
    are kept, each of its type or None; run_id and start are always there, and so is a known
    outcome in a ledger line (a running marker has none)."""

    run_id: Required[str]
    start: Required[str]
    job: str | None
    project: str | None
    env: str | None
    end: str | None
    duration: float | None
    exit_code: int | None
    outcome: RunOutcome | None
    host: str | None
    pid: int | None
    wrapper_pid: int | None
    user: str | None
    revision: str | None
    trigger: str | None
    log: str | None
    lock_holder: str | None
    signal: int | None
    error: str | None
    alive: bool  # a running marker's: its job's process still lives (the probe adds it)
