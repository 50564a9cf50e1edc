"""Facts: what the probe saw on a target, as typed data."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from deployer.core import crontab
from deployer.core.release import Identity
from deployer.remote.cronengine import FLAVOURS
from deployer.remote.messages import BackupRecord, CronDaemon, Drift, JobRuntime, PathInfo, ProbeAnswer, ReleaseJob, RollbackMark, SpaceInfo, UserInfo


@dataclass(frozen=True)
class PathFact:
    type: str  # dir | file | link | error | what else it is (FIFO, socket, character device...)
    mode: int = 0
    owner: str = ""
    group: str = ""
    sha256: str | None = None
    error: str = ""  # type error: why the path was not looked at (a link planted on the way)


@dataclass(frozen=True)
class CrontabFact:
    text: str | None  # None: the user has no crontab
    error: str | None = None


@dataclass(frozen=True)
class Facts:
    hostname: str
    identity: Identity
    python: str
    python_version: str
    deploy_home: str
    users: dict[str, UserInfo | None]  # None: no such user
    crontabs: dict[str, CrontabFact]
    paths: dict[str, PathFact | None]
    releases: dict[str, dict[str, PathFact]]
    # The live revision: the one our crontab blocks run (the switch), else what `current` names.
    current: str | None
    cron_running: bool
    cron_process: str | None = None
    # Which cron the running daemon is (debian | cronie | busybox); None: none runs, or one
    # deployer does not know.
    cron_flavour: str | None = None
    now: float = 0.0  # the target's clock
    timezone: str = "UTC"
    deployed_at: float | None = None  # when `current` last moved
    jobs: dict[str, JobRuntime] = field(default_factory=dict)  # run history, running runs, lock
    space: dict[str, SpaceInfo] = field(default_factory=dict)
    # release -> file -> {"why": ..., "content": base64 of a hand-edited file}: differs from its manifest
    drift: dict[str, dict[str, Drift]] = field(default_factory=dict)
    rollback: RollbackMark | None = None  # rollback.json: held at an older revision on purpose
    backups: list[BackupRecord] = field(default_factory=list)  # backups/*/index.json, oldest first
    current_link: str | None = None  # what the `current` link names (may lag the crontab: see live_revision)
    # target files that could not be read or parsed (a FIFO, a link, a bad line): verify warns
    problems: list[str] = field(default_factory=list)
    # release -> user -> the crontab block its manifest says it installs (byte for byte)
    release_blocks: dict[str, dict[str, str]] = field(default_factory=dict)
    # release -> job id -> what it runs (probed for rollback only: Reads.release_jobs)
    release_jobs: dict[str, dict[str, ReleaseJob]] = field(default_factory=dict)
    # processes named as a cron that are not this system's daemon, each with why (verify says them)
    cron_ignored: list[str] = field(default_factory=list)
    raw: Mapping[str, object] = field(default_factory=dict, compare=False, repr=False)

    def runtime(self, job_id: str) -> JobRuntime:
        """What the probe read of the job's runs, lock and log; nothing (no run, no lock) when it said none."""
        return self.jobs.get(job_id) or {"runs": [], "last_success": None, "running": [], "lock": {"holders": [], "content": ""},
                                         "legacy_locks": {}, "problems": []}


def _path(info: PathInfo | None) -> PathFact | None:
    if info is None:
        return None
    kind: str = info.get("type", "other")
    if kind == "other":
        kind = str(info.get("kind") or "special file")
    return PathFact(kind, int(info.get("mode", 0)), info.get("owner", ""), info.get("group", ""),
                    info.get("sha256"), str(info.get("error") or ""))


def live_revision(crontabs: dict[str, CrontabFact], link: str | None, project: str, env: str) -> str | None:
    """Which release is live on the target.

    The crontab install is the switch: from that instant cron runs the release its block
    names, whole. The ``current`` link moves in a second write, which cannot be atomic with
    the first, so an apply killed between the two leaves the link one step behind. The
    blocks are therefore the truth, and the link only the answer when no block says (no job
    on this host, or nothing deployed). Blocks of several users that disagree (an apply
    killed between two users' installs) are not one revision: then the link, and the plan
    lists the lagging crontab as a change."""
    revisions = {rev for tab in crontabs.values() if (rev := crontab.block_revision(tab.text, project, env))}
    return revisions.pop() if len(revisions) == 1 else link


def cron_flavour_of(cron: object) -> str | None:
    """The flavour the probe says the target's cron daemon is. The answer comes from the
    target, so it may be anything: only the names of the flavours deployer knows count."""
    flavour = cron.get("flavour") if isinstance(cron, dict) else None
    return flavour if isinstance(flavour, str) and flavour in FLAVOURS else None


NO_CRON: CronDaemon = {"running": False, "process": None, "pid": None, "flavour": None, "ignored": []}


def parse_facts(data: ProbeAnswer, project: str, env: str) -> Facts:
    raw_cron = data.get("cron")
    cron = raw_cron if isinstance(raw_cron, dict) else NO_CRON
    crontabs = {u: CrontabFact(c.get("text"), c.get("error")) for u, c in data.get("crontabs", {}).items()}
    return Facts(
        hostname=data["hostname"],
        identity=Identity(data["user"], int(data["uid"]), data["home"]),
        python=data["python"],
        python_version=data["python_version"],
        deploy_home=data["deploy_home"],
        users=data.get("users", {}),
        crontabs=crontabs,
        paths={p: _path(i) for p, i in data.get("paths", {}).items()},
        releases={rev: {rel: f for rel, i in r.get("files", {}).items() if (f := _path(i)) is not None}
                  for rev, r in data.get("releases", {}).items()},
        current=live_revision(crontabs, data.get("current"), project, env),
        current_link=data.get("current"),
        cron_running=bool(cron.get("running")),
        cron_process=cron.get("process"),
        cron_flavour=cron_flavour_of(cron) if cron.get("running") else None,
        now=float(data.get("now", 0.0)),
        timezone=str(data.get("timezone") or "UTC"),
        deployed_at=data.get("deployed_at"),
        jobs=data.get("jobs", {}),
        space=data.get("space", {}),
        drift={rev: r.get("drift") or {} for rev, r in data.get("releases", {}).items()},
        release_blocks={rev: dict(r.get("crontab_blocks") or {}) for rev, r in data.get("releases", {}).items()},
        release_jobs={rev: dict(r.get("jobs") or {}) for rev, r in data.get("releases", {}).items()},
        cron_ignored=[str(i) for i in cron.get("ignored") or []],
        rollback=data.get("rollback"),
        backups=list(data.get("backups") or []),
        problems=[str(p) for p in data.get("problems") or []],
        raw=data,
    )
