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

# The probe reads what it is asked to (ProbeRequest) and answers with everything plan, verify,
# status and the history commands need (ProbeAnswer). Most of the answer is read from files a
# job's user may write (ledgers, markers, lock files): the probe checks each value it passes
# on (targetlib.run_record), the controller still checks those it acts on.

# What lstat says a path is; "other" comes with ``kind`` (a FIFO, a socket...), "error" with
# ``error`` (a link planted on the way: not looked behind).
PathType = Literal["dir", "file", "link", "other", "error"]
# targetlib.file_kind: what a path that is not a file, a folder or a link is.
FileKind = Literal["FIFO", "folder", "symlink", "socket", "character device", "block device", "special file"]
# The crons deployer's cron engine knows (deployer/remote/cronengine.py FLAVOURS).
CronFlavour = Literal["debian", "cronie", "busybox"]



class RunLogRequest(TypedDict):
    """``logs --run``: one run's own log file, of job ``job``."""

    job: str
    run: str  # last | failed | the start of a run id
    lines: NotRequired[int]  # the last lines of the file (default 50)


class ProbeJob(TypedDict):
    """Where one job keeps its runtime files (paths as the controller renders them)."""

    id: str
    state_dir: str
    lock_file: str
    log_file: str
    legacy_locks: NotRequired[list[str]]  # lock files of the hand-made setup it replaced


class ProbeRequest(TypedDict, total=False):
    """What the controller asks the probe (deployer/engine/session.py probe()). Only
    ``deploy_home`` is needed; each other key missing reads as nothing asked."""

    deploy_home: Required[str]
    users: list[str]  # users to look up (jobs' run_as, folders' owners)
    crontab_users: list[str]  # crontabs to read, besides ours and those the live release lists
    paths: list[str]  # paths to describe (lstat, walked safely)
    jobs: list[ProbeJob]
    log_tail: int  # the last lines of each job's log (logs)
    ledger_all: bool  # every ledger line (history --export)
    backups: bool  # backups/*/index.json (rollback)
    run_log: RunLogRequest | None
    space: list[str]  # folders whose free space and inodes to measure
    release_jobs: bool  # each kept release's jobs (rollback: the healthchecks checks of the release it goes back to)


class UserInfo(TypedDict):
    uid: int
    gid: int
    home: str


class CrontabRead(TypedDict):
    text: str | None  # the crontab's exact bytes (UTF-8, surrogateescape); None: the user has none
    error: str | None  # why it could not be read


class PathInfo(TypedDict, total=False):
    """What is at a path (targetlib.describe_path); a release file also has its ``sha256``,
    or an ``error`` when it could not be read."""

    type: Required[PathType]
    mode: int  # permission bits (st_mode & 0o7777)
    owner: str  # a name, or the uid when it has none
    group: str
    kind: FileKind  # type "other"
    sha256: str  # a release's file: its digest ("larger-than-N-bytes" past the probe's limit)
    error: str | None  # type "error": why it was not looked at; a release file: why it was not hashed


class Drift(TypedDict):
    """How a release's file differs from the release's manifest."""

    why: str
    content: NotRequired[str]  # base64 of a hand-edited file (not an env file, up to 64 KiB): for plan's diff


class ReleaseJob(TypedDict):
    """A job of a kept release as the probe read it back (``jobs/<id>.json``, and the grace and
    ping of ``alerts/<id>.json``), so that rollback can give its healthchecks check the
    schedule and grace of the release it goes back to. Each value of its type, else None."""

    schedule: str | None
    timeout: int | None
    description: str | None
    grace: int | None  # the declared alerts grace; None: derived, or no alerts
    # The last segment of the job's ping URL when it is a slug of this project and environment
    # (``<project>-<env>-...``): which deployer check the job pings. Never the URL, which holds the ping key.
    ping_slug: str | None


class ReleaseInfo(TypedDict):
    files: dict[str, PathInfo | None]  # relative path -> what is there (None: gone meanwhile)
    mtime: float
    drift: dict[str, Drift]
    crontab_blocks: dict[str, str]  # user -> the block its manifest says it installs ({}: older releases)
    jobs: NotRequired[dict[str, ReleaseJob]]  # job id -> what the release runs (asked: release_jobs)


class CronDaemon(TypedDict):
    """The cron daemon of this system, or why each process named as one does not count."""

    running: bool
    process: str | None  # its process name
    pid: int | None
    flavour: CronFlavour | None  # None: not one deployer knows (fcron), or none runs
    ignored: list[str]  # "pid N 'cron': why it is not this system's cron"


class LockSeen(TypedDict):
    holders: list[int]  # PIDs holding the job's flock (not the probe's)
    content: str  # the lock file's first line (the wrapper writes "pid N since TIME")


class LegacyLock(TypedDict, total=False):
    """A lock file of a hand-made setup; a link, a FIFO... there is said as what it is."""

    type: Required[PathType | FileKind]
    error: str | None  # type "error"
    mode: int
    owner: str
    group: str
    pid: int | None  # the pid its first word names
    alive: bool  # that process lives
    held: bool  # someone holds a flock on it
    age: float  # seconds since it was last written


class RunLog(TypedDict, total=False):
    """``logs --run``: the run found and the last lines of its own log, or why not."""

    run: RunFound
    path: str
    lines: list[str]
    error: str


class AlertIncident(TypedDict):
    """A job's open incident, as its alert state holds it."""

    event: str  # failure | timeout | crash | late
    opened: float  # epoch seconds
    told: bool  # a channel took its message (False: held by the quiet period, or no channel took it yet)
    run_id: str | None  # the run that opened it (None: late)
    told_to: list[str]  # the channels that took its message (a state from before: [], ``told`` alone says it)
    owed: list[str]  # the channels its last try did not reach: tried again by a later event, or given up
    tries: int  # times its message was sent (the first and the repeats), at most alerts.RETRY_TRIES
    last_try: float | None  # when it was last sent


class AlertSent(TypedDict):
    """The last message of a job's alerting: when, which event, to which channels."""

    at: float
    event: str  # failure | timeout | crash | late | recovered
    channels: list[str]  # the channels it went to
    failed: list[str]  # those of them whose delivery failed


class ChannelDelivery(TypedDict):
    """The last delivery to one channel (or to the check: channel ``ping``)."""

    at: float
    event: str  # failure | ... | recovered | ping-start | ping-<exit status>
    ok: bool
    error: str | None


class AlertState(TypedDict):
    """``state/<job>/alerts.json`` as the probe read it back (targetlib.alert_state): written by
    the run wrapper and the watchdog (remote/alerts.py ``initial_state``, ``decide``,
    ``note_deliveries``), each field checked; a state written before a field existed reads
    with it empty."""

    consecutive_failures: int
    incident: AlertIncident | None
    last_told: float | None  # when the last incident was told: the quiet period runs from there
    untold: int  # incidents held by the quiet period since
    last_alert: AlertSent | None
    deliveries: dict[str, ChannelDelivery]  # channel -> its last delivery


class JobRuntime(TypedDict):
    """One job's runtime, read from its state folder, lock and log."""

    runs: list[RunFound]  # the last 50 runs of its ledger, oldest first
    last_success: RunFound | None  # the last run that succeeded (looked for further back)
    running: list[RunFound]  # runs that started and have not ended, each with ``alive``
    lock: LockSeen
    legacy_locks: dict[str, LegacyLock | None]  # path -> what is there (None: nothing)
    problems: list[str]  # what could not be read (a bad ledger line, a FIFO)
    log_tail: NotRequired[list[str]]  # ProbeRequest log_tail
    ledger: NotRequired[list[RunFound]]  # ProbeRequest ledger_all
    run_log: NotRequired[RunLog]  # ProbeRequest run_log, for this job
    alerts: NotRequired[AlertState]  # its alert state, for a job whose runs keep one


class SpaceInfo(TypedDict):
    free_bytes: int  # for an unprivileged user
    total_bytes: int
    free_inodes: int
    total_inodes: int


# ``rollback.json``: the target is held at an older revision on purpose (written by the
# applier's rollback, see ApplyRequest): revision (held at), at (when, UTC ISO 8601), from (the
# revision it was rolled back from), blocks (user -> the crontab block restored). "from" is a
# keyword: the functional form.
RollbackMark = TypedDict("RollbackMark", {"revision": str, "at": str, "from": str | None,
                                          "blocks": dict[str, str | None]}, total=False)


class BackupRecord(TypedDict, total=False):
    """``backups/<name>/index.json``: what one apply replaced, with ``name`` (the folder)."""

    name: str
    kind: str  # apply | rollback | destroy
    revision: str | None  # the revision that was live (None: nothing was)
    to: str | None  # the revision the apply brought
    at: str  # when (UTC, ISO 8601)
    crontabs: dict[str, str | None]  # user -> the crontab as it was (None: none)


class ProbeAnswer(TypedDict):
    """The probe's one JSON line (deployer/remote/probe.py main), read by core/facts.py."""

    ok: Literal[True]
    hostname: str
    user: str  # who the probe runs as
    uid: int
    home: str
    python: str  # sys.executable
    python_version: str
    deploy_home: str  # expanded
    users: dict[str, UserInfo | None]  # None: no such user
    crontabs: dict[str, CrontabRead]
    paths: dict[str, PathInfo | None]  # expanded path -> what is there (None: nothing)
    releases: dict[str, ReleaseInfo]
    current: str | None  # the revision the ``current`` link names
    cron: CronDaemon
    now: float  # the target's clock
    timezone: str
    deployed_at: float | None  # when ``current`` last moved
    jobs: dict[str, JobRuntime]
    space: dict[str, SpaceInfo]  # folder -> its file system's free space (missing: not measured)
    rollback: RollbackMark | None
    backups: list[BackupRecord]  # oldest first; [] unless asked
    problems: list[str]  # target files that could not be read: verify warns


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


class AlertRulesSpec(TypedDict):
    when: list[str]  # failure | timeout | crash | late | recovered
    after: int  # failed runs in a row before an incident opens
    quiet: int  # seconds: at most one new incident told per quiet period


class SmtpSpec(TypedDict):
    host: str
    port: int
    starttls: bool
    user: str | None
    password: str | None  # a secret, resolved on the controller
    ca_file: str | None  # on the target


class AlertChannelSpec(TypedDict, total=False):
    name: Required[str]
    type: Required[Literal["mail", "webhook", "apprise"]]
    to: list[str]  # mail
    sender: str | None
    smtp: SmtpSpec | None  # mail through a relay, or
    sendmail: str | None  # the target's program
    url: str  # webhook
    headers: dict[str, str]  # webhook; values may be secrets
    urls: list[str]  # apprise: its service URLs (secrets)
    program: str  # apprise: the program that sends them


class AlertConfigFile(TypedDict):
    """``<release>/alerts/<id>.json``: who hears of job <id> and how (controller -> wrapper;
    written by deployer/core/alertconfig.py, read by deployer/remote/runalerts.py through
    deployer/remote/alerts.py, whose docstring shows it). Holds resolved secrets: root's (or
    the deploying user's), 0600, and no digest of it is ever published. Only jobs with alerts
    have one."""

    project: str
    env: str
    job: str
    host: NotRequired[str]  # the host's inventory name, which messages give (absent before: its hostname)
    rules: AlertRulesSpec
    grace: int | None  # seconds after a due time before the job is late; None: not declared
    timeout: float  # seconds a channel may take, its retries included
    retries: int
    channels: list[AlertChannelSpec]
    ping: str | None  # healthchecks-compatible check URL (a secret: whoever has it can ping)
    metrics_dir: str | None  # node_exporter's textfile folder
    secret_env: list[str]  # names of the job's env variables whose values are masked in output tails


class AlertDelivery(TypedDict):
    """One message or ping of a run, as its ledger line records it (no URL, no secret)."""

    channel: str  # the channel's name, or "ping"
    event: str  # failure | timeout | crash | recovered | ping-start | ping-<exit status>
    ok: bool
    error: str | None
    attempts: int
    seconds: float


class RunExtra(TypedDict, total=False):
    """The fields a run adds to its ledger line when they apply."""

    log: str  # its own log, relative to the state folder (retention.run_logs)
    lock_holder: str  # skipped-locked: what the lock file says of the run that holds it
    signal: int  # crashed: the signal that stopped the job
    error: str  # could not start (exit code 127): why
    alerts: list[AlertDelivery]  # the job has alerts: what the run told, and what failed
    alert_errors: list[str]  # the job has alerts: what went wrong in alerting itself (state, metrics)


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
    alerts: list[AlertDelivery] | None
    alert_errors: list[str] | None
    alive: bool  # a running marker's: its job's process still lives (the probe adds it)


class WatchdogSent(TypedDict):
    """The last late message the watchdog sent for a job, and what became of it."""

    at: str  # ISO 8601 UTC
    event: str  # late
    due: str | None  # the fire the job missed
    deliveries: list[AlertDelivery]


class WatchdogJob(TypedDict):
    """One job in the watchdog's record: what its last round found."""

    grace: int | None  # seconds (declared, else derived: lateness.grace_seconds); None: not judged
    due: str | None  # the latest fire whose grace has passed (ISO 8601 UTC)
    late: bool
    why: str
    errors: list[str]  # at most 10, each a line
    sent: NotRequired[WatchdogSent]  # kept from earlier rounds until a new one sends


class WatchdogRecord(TypedDict):
    """``<home>/state/watchdog.json``: the last round of the on-target watchdog (written by
    deployer/remote/watchdog.py; an operator's to read, with its jobs' alert states)."""

    version: int  # 1
    checked_at: str  # ISO 8601 UTC
    release: str  # the revision whose watchdog ran
    since: str | None  # when that release became current (fires before it are not judged)
    problem: str | None  # why nothing was judged (the release is not the current one)
    jobs: dict[str, WatchdogJob]  # the jobs whose alerts tell `late`
