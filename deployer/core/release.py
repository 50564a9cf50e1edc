"""materialize: DesiredState + who we are on the target -> Release (exact bytes to install).

A release is an immutable folder ``<home>/releases/<revision>`` holding the run wrapper,
the task scripts, one JSON spec and one env file per job, and a manifest. The revision
is a hash of that content, so the same declaration always gives the same revision (a
second apply finds it in place) and any change gives a new folder beside the old one.
Crontab lines point into the release folder, so installing the crontab is the single
switch from the old release to the new one.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import dataclass

from deployer.core.bundle import bundle
from deployer.core.crontab import begin_marker, end_marker
from deployer.core.desired import DesiredState, JobSpec, expand_home
from deployer.core.redaction import secret_values
from deployer.core.templates import render_template
from deployer.remote.messages import JobSpecFile, RetentionSpec


@dataclass(frozen=True)
class Identity:
    """Who deployer is on the target (after become), as the probe saw it."""

    user: str
    uid: int
    home: str


def local_identity() -> Identity:
    """Who we are on this machine (what the probe would say of a local target)."""
    import os
    import pwd

    entry = pwd.getpwuid(os.getuid())
    return Identity(entry.pw_name, entry.pw_uid, entry.pw_dir)


@dataclass(frozen=True)
class ReleaseFile:
    path: str  # relative to the release folder
    content: bytes
    mode: int
    owner: str | None = None
    secret: bool = False
    # A file holding secrets: its content with every secret value masked. Only this part may
    # enter what others can read (the revision, the manifest): the digest of a 0600 env file
    # is a test for guessed secrets, salted or not, for anyone who reads it.
    public: bytes | None = None

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    @property
    def public_sha256(self) -> str:
        return hashlib.sha256(self.content if self.public is None else self.public).hexdigest()


@dataclass(frozen=True)
class EnsureDir:
    path: str
    mode: int
    owner: str | None = None
    group: str | None = None
    enforce: tuple[str, ...] = ("mode", "owner", "group")  # set on an existing folder (see DirSpec.enforce)


@dataclass(frozen=True)
class EnsureFile:
    """A file that must exist with an owner and mode; its content is the job's (logs, locks)."""

    path: str
    mode: int
    owner: str | None = None


@dataclass(frozen=True)
class KeepRecords:
    """The run records of a job (its state folder: ledger, running markers, run logs) belong to
    ``owner``: root, when root deploys a job that runs as another user. That user's wrapper
    wrote them until then; the applier takes them over (see applier._own_records)."""

    state_dir: str
    owner: str


@dataclass(frozen=True)
class Release:
    project: str
    env: str
    target: str
    deploy_home: str
    revision: str
    files: tuple[ReleaseFile, ...]
    dirs: tuple[EnsureDir, ...]
    job_files: tuple[EnsureFile, ...]
    crontab_blocks: dict[str, str]  # user -> block text (markers included)
    jobs: tuple[JobSpec, ...]
    keep_releases: int
    records: tuple[KeepRecords, ...] = ()  # run records root keeps (see KeepRecords)
    cron_flavour: str | None = None  # the inventory's deployer_cron_flavour (see timing.cron_rules)

    @property
    def release_dir(self) -> str:
        return f"{self.deploy_home}/releases/{self.revision}"

    @property
    def secret_values(self) -> frozenset[str]:
        return secret_values(self.jobs)  # the one definition (core/redaction.py)


# The release's ``run``: the wrapper's module and what it imports, then the call cron makes.
WRAPPER_MAIN = ("\nif __name__ == '__main__':\n    from deployer.remote import wrapper as _wrapper\n"
                "    _sys.exit(_wrapper.entry(_sys.argv[1:], __file__))\n")


def wrapper_source() -> bytes:
    """The run wrapper bundled with the target modules it imports: one self-contained file per release."""
    return ("#!/usr/bin/env python3\n" + bundle("wrapper") + WRAPPER_MAIN).encode()


# The release's ``watchdog``: a file of its own, in a release with late alerts only, so the
# ``run`` every run of every job starts neither carries it nor changes for it.
WATCHDOG_MAIN = ("\nif __name__ == '__main__':\n    from deployer.remote import watchdog as _watchdog\n"
                 "    _sys.exit(_watchdog.entry(_sys.argv[1:], __file__))\n")
WATCHDOG_SCHEDULE = "*/5 * * * *"  # the "every 5 minutes": a late job is told at most 5 minutes after its grace


def watchdog_source() -> bytes:
    """The on-target watchdog (deployer/remote/watchdog.py) bundled with what it imports."""
    return ("#!/usr/bin/env python3\n" + bundle("watchdog") + WATCHDOG_MAIN).encode()


def watches_lateness(job: JobSpec) -> bool:
    """Whether the watchdog tells of this job: its alerts tell ``late`` to at least one channel."""
    if job.alerts is None:
        return False
    config = json.loads(job.alerts)  # core/alertconfig.py wrote it
    return "late" in config["rules"]["when"] and bool(config["channels"])


def watchdog_command(python: str, release_dir: str, flavour: str | None) -> str:
    """The watchdog's crontab command: this release's watchdog, isolated (-I: nothing of the
    environment's Python paths runs as root), told the inventory's cron flavour when it names one."""
    return f"{python} -I {shlex.quote(release_dir + '/watchdog')}" + (f" --flavour {flavour}" if flavour else "")


def env_file(job: JobSpec, mask_secrets: bool = False) -> bytes:
    env = tuple((n, "<secret>" if mask_secrets and n in job.secret_names else v) for n, v in job.env)
    return render_template("env_file.j2", env=env).encode()


def job_spec(job: JobSpec, project: str, env: str) -> bytes:
    """``jobs/<id>.json``, the JobSpecFile the wrapper reads (keys sorted: its bytes make the revision)."""
    retention: RetentionSpec = {"runs": job.retention.runs, "days": job.retention.days,
                                "log_size": job.retention.log_size, "log_files": job.retention.log_files}
    if job.retention.run_logs:  # only when on: a job without them keeps its bytes, hence its revision
        retention["run_logs"] = job.retention.run_logs
    spec: JobSpecFile = {
        "id": job.id,
        "project": project,
        "env": env,
        "description": job.description,
        "schedule": job.schedule,
        "script": job.script,
        "command": job.command,
        "args": list(job.args),
        "run_as": job.run_as,
        "log_file": job.log_file,
        "lock_file": job.lock_file,
        "state_dir": job.state_dir,
        "timeout": job.timeout,
        "concurrency": job.concurrency,
        "workdir": job.workdir,
        "env_file": f"env/{job.id}.env" if job.env else None,
        "retention": retention,
    }
    return (json.dumps(spec, indent=2, sort_keys=True) + "\n").encode()


def _expand_job(job: JobSpec, home: str, uid: int) -> JobSpec:
    def x(value: str) -> str:
        return expand_home(value, home, uid)

    return JobSpec(
        id=job.id, description=job.description, schedule=job.schedule, script=job.script, command=job.command,
        args=tuple(x(a) for a in job.args), run_as=job.run_as, log_file=x(job.log_file), lock_file=x(job.lock_file),
        state_dir=x(job.state_dir), timeout=job.timeout, concurrency=job.concurrency,
        workdir=x(job.workdir) if job.workdir else None,
        env=tuple((n, v if n in job.secret_names else x(v)) for n, v in job.env), secret_names=job.secret_names,
        legacy_locks=tuple(x(p) for p in job.legacy_locks), legacy_scripts=tuple(x(p) for p in job.legacy_scripts),
        retention=job.retention,
        moves=tuple((x(a), x(b)) for a, b in job.moves),
        alerts=job.alerts, alerts_public=job.alerts_public, alert_secrets=job.alert_secrets,
    )


def revision_of(files: tuple[ReleaseFile, ...], project: str, env: str) -> str:
    digest = hashlib.sha256(f"{project}\0{env}\0".encode())
    for f in sorted(files, key=lambda f: f.path):
        digest.update(f"{f.path}\0{f.mode:o}\0{f.owner or ''}\0{f.public_sha256}\0".encode())
    return digest.hexdigest()[:12]


def crontab_block(project: str, env: str, revision: str, jobs: list[JobSpec], python: str, release_dir: str,
                  flavour: str | None = None) -> str:
    """Our block for one user's crontab (templates/crontab_block.j2): every line runs the job
    through this release's wrapper, so the block's install is the switch to the release; with
    a job whose alerts tell ``late``, one more line runs the release's watchdog."""
    entries = [{"id": job.id, "description": job.description, "schedule": job.schedule,
                "command": f"{python} {shlex.quote(release_dir + '/run')} {job.id}"} for job in jobs]
    watchdog = ({"schedule": WATCHDOG_SCHEDULE, "command": watchdog_command(python, release_dir, flavour)}
                if any(watches_lateness(job) for job in jobs) else None)
    return render_template("crontab_block.j2", begin=begin_marker(project, env), end=end_marker(project, env),
                           revision=revision, jobs=entries, watchdog=watchdog)


def crontab_user(job: JobSpec, who: Identity) -> str:
    """Whose crontab starts the job. Deploying as root: root's, for every job. The wrapper then
    starts as root, keeps the run records in root's folders and runs the job as its user with
    that user's groups, as cron does; the job's user cannot forge the proof that it ran.
    Otherwise the deploying user's own (the only crontab it may write)."""
    return who.user if who.uid == 0 else (job.run_as or who.user)


def drops_to(job: JobSpec, who: Identity) -> str | None:
    """The user a root-started wrapper runs the job as (None: the wrapper's own user)."""
    return job.run_as if who.uid == 0 and job.run_as and job.run_as != who.user else None


def materialize(desired: DesiredState, who: Identity) -> Release:
    """The exact release for this target, now that its user and home are known."""
    home = who.home
    deploy_home = expand_home(desired.deploy_home, home, who.uid)
    jobs = tuple(_expand_job(j, home, who.uid) for j in desired.jobs)

    files: list[ReleaseFile] = [ReleaseFile("run", wrapper_source(), 0o755)]
    if any(watches_lateness(job) for job in jobs):
        files.append(ReleaseFile("watchdog", watchdog_source(), 0o755))
    for name, content in desired.files:
        files.append(ReleaseFile(f"scripts/{name}", content, 0o755 if name in desired.script_names else 0o644))
    for job in jobs:
        files.append(ReleaseFile(f"jobs/{job.id}.json", job_spec(job, desired.project, desired.env), 0o644))
        # Read by the wrapper's user: root's when root starts it (the job gets the values in
        # its environment, never the file), else the job's own.
        owner = job.run_as if job.run_as and job.run_as != who.user and who.uid != 0 else None
        if job.alerts is not None:
            # channel passwords, tokens, the ping URL: secret whether or not one was declared as such
            files.append(ReleaseFile(f"alerts/{job.id}.json", job.alerts.encode(), 0o600, owner, secret=True,
                                     public=(job.alerts_public or "").encode()))
        if job.env:
            secret = bool(job.secret_names)
            files.append(ReleaseFile(f"env/{job.id}.env", env_file(job), 0o600, owner, secret=secret,
                                     public=env_file(job, mask_secrets=True) if secret else None))
    revision = revision_of(tuple(files), desired.project, desired.env)
    release_dir = f"{deploy_home}/releases/{revision}"
    by_user: dict[str, list[JobSpec]] = {}
    for job in jobs:
        by_user.setdefault(crontab_user(job, who), []).append(job)
    blocks = {user: crontab_block(desired.project, desired.env, revision, user_jobs, desired.python, release_dir,
                                  desired.cron_flavour)
              for user, user_jobs in sorted(by_user.items())}
    manifest = {
        "project": desired.project,
        "env": desired.env,
        "revision": revision,
        "jobs": [j.id for j in jobs],
        "crontab_users": sorted(by_user),
        # No digest of a file with secrets (the manifest is world-readable): the probe checks
        # those against the declaration's own digests, which never leave the controller.
        "files": {f.path: {"sha256": None if f.secret else f.sha256, "mode": f"{f.mode:04o}", "owner": f.owner}
                  for f in sorted(files, key=lambda f: f.path)},
        # The exact blocks this revision installs: what rollback puts back and verify compares,
        # byte for byte (a backup may hold a block edited by hand)
        "crontab_blocks": blocks,
    }
    files.append(ReleaseFile("manifest.json", (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode(), 0o644))

    def owner_of(user: str | None) -> str | None:
        return user if user and user != who.user else None

    # home, releases and state: made 0755; existing ones keep their owner and mode (the applier
    # refuses them when others can write them; see core/home.py)
    dirs = [EnsureDir(deploy_home, 0o755, enforce=()), EnsureDir(f"{deploy_home}/releases", 0o755, enforce=()),
            EnsureDir(f"{deploy_home}/state", 0o755, enforce=()), EnsureDir(f"{deploy_home}/backups", 0o700)]
    dirs += [EnsureDir(expand_home(d.path, home, who.uid), d.mode, owner_of(d.owner), d.group, d.enforce) for d in desired.dirs]
    job_files: list[EnsureFile] = []
    records: list[KeepRecords] = []
    for job in jobs:
        if drops_to(job, who):
            dirs.append(EnsureDir(job.state_dir, 0o750))
            records.append(KeepRecords(job.state_dir, who.user))
        else:
            dirs.append(EnsureDir(job.state_dir, 0o750, owner_of(job.run_as)))
        job_files.append(EnsureFile(job.lock_file, 0o600, owner_of(job.run_as)))
        job_files.append(EnsureFile(job.log_file, 0o640, owner_of(job.run_as)))
    unique_dirs = list({d.path: d for d in dirs}.values())
    return Release(
        project=desired.project, env=desired.env, target=desired.target, deploy_home=deploy_home,
        revision=revision, files=tuple(files), dirs=tuple(unique_dirs), job_files=tuple(job_files),
        crontab_blocks=blocks, jobs=jobs, keep_releases=desired.keep_releases, records=tuple(records),
        cron_flavour=desired.cron_flavour,
    )
