"""plan: Release + Facts -> Plan. Pure: the list of changes, the crontab diffs, the bundle.

``apply`` sends ``Plan.bundle()`` to the target as it is; check mode (``plan``) is the
same code path with the send skipped.
"""

from __future__ import annotations

import base64
import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field

from deployer.core import crontab
from deployer.core.adopt import HandMade, hand_made, without_lines
from deployer.core.facts import Facts, PathFact
from deployer.core.home import home_errors, home_warnings
from deployer.core.legacy import stale_legacy_locks
from deployer.core.release import EnsureDir, EnsureFile, KeepRecords, Release, ReleaseFile
from deployer.remote.messages import ApplyKind, ApplyRequest, CrontabSpec, DirSpec, FileSpec, RecordsSpec, ReleaseFileSpec, RollbackMark


@dataclass(frozen=True)
class Change:
    """One line of the plan, for people (``summary``) and machines (``kind``, ``path``)."""

    kind: str  # release | dir | file | move | crontab | current
    path: str
    summary: str

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "path": self.path, "summary": self.summary}


@dataclass(frozen=True)
class CrontabChange:
    user: str
    before: str | None
    after: str

    def diff(self) -> str:
        before = crontab.lines(self.before or "")  # cron's lines, so the diff shows what cron sees
        after = crontab.lines(self.after)
        label = f"crontab of {self.user}"
        lines = difflib.unified_diff(before, after, f"{label} (now)", f"{label} (planned)")
        return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines)


def records_params(records: Sequence[KeepRecords]) -> list[RecordsSpec]:
    """The applier's parameters for run records changing hands (after the crontab switch)."""
    return [{"path": r.state_dir, "owner": r.owner} for r in records]


def crontab_params(changes: Sequence[CrontabChange]) -> list[CrontabSpec]:
    """The applier's crontab parameters: what it must find (compare-and-swap), what it installs."""
    return [{"user": c.user, "expected": c.before, "text": c.after} for c in changes]


def apply_request(release: Release, facts: Facts, kind: ApplyKind, revision: str | None,
                  crontab_changes: Sequence[CrontabChange], records: Sequence[KeepRecords] = ()) -> ApplyRequest:
    """The applier's bundle (messages.ApplyRequest) with every key all three kinds send, defined
    once: apply (``Plan.bundle``), rollback and destroy (core/lifecycle.py) add what only they do."""
    return {"project": release.project, "env": release.env, "deploy_home": release.deploy_home, "kind": kind,
            "revision": revision, "previous_revision": facts.current, "keep_releases": release.keep_releases,
            "release": None, "moves": [], "dirs": [], "files": [], "remove_stale_locks": [],
            "crontabs": crontab_params(crontab_changes), "records": records_params(records), "set_current": False}


def _release_file(f: ReleaseFile) -> ReleaseFileSpec:
    spec: ReleaseFileSpec = {"path": f.path, "content": base64.b64encode(f.content).decode(), "mode": f.mode, "owner": f.owner}
    if f.secret:
        spec["secret"] = True
    return spec


def _dir_spec(d: EnsureDir) -> DirSpec:
    return {"path": d.path, "mode": d.mode, "owner": d.owner, "group": d.group, "enforce": list(d.enforce)}


def _file_spec(f: EnsureFile) -> FileSpec:
    return {"path": f.path, "mode": f.mode, "owner": f.owner}


@dataclass
class Plan:
    release: Release
    facts: Facts
    changes: list[Change] = field(default_factory=list)
    crontab_changes: list[CrontabChange] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    release_files: list[ReleaseFile] = field(default_factory=list)
    release_remove: list[str] = field(default_factory=list)
    release_exists: bool = False
    dirs: list[EnsureDir] = field(default_factory=list)
    job_files: list[EnsureFile] = field(default_factory=list)
    set_current: bool = False
    stale_locks: list[str] = field(default_factory=list)
    moves: list[tuple[str, str]] = field(default_factory=list)  # a renamed job's state and log
    records: list[KeepRecords] = field(default_factory=list)  # run records root takes over
    # Hand edits found on the target: (where, unified diff from what is there to what is declared)
    drift: list[tuple[str, str]] = field(default_factory=list)
    # Hand-made crontab lines that run a declared job (removed when adopting)
    hand_made: list[HandMade] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.changes and not self.crontab_changes

    def bundle(self) -> ApplyRequest:
        """The applier's parameters: exactly the changes of this plan."""
        request = apply_request(self.release, self.facts, "apply", self.release.revision, self.crontab_changes, self.records)
        if self.release_files or self.release_remove:
            request["release"] = {"files": [_release_file(f) for f in self.release_files], "remove": self.release_remove}
        request["dirs"] = [_dir_spec(d) for d in self.dirs]
        request["files"] = [_file_spec(f) for f in self.job_files]
        request["set_current"] = self.set_current
        request["remove_stale_locks"] = self.stale_locks
        request["moves"] = [{"from": a, "to": b} for a, b in self.moves]
        return request


def _mode(mode: int) -> str:
    return f"{mode:04o}"


def _plan_release(plan: Plan) -> None:
    release, facts = plan.release, plan.facts
    present = facts.releases.get(release.revision)
    if present is None:
        plan.release_files = list(release.files)
        base = facts.releases.get(facts.current or "", {})
        details = []
        for f in release.files:
            old = base.get(f.path)
            if old is None:
                details.append(f"+{f.path}")
            elif old.sha256 != f.sha256 or old.mode != f.mode:
                details.append(f"~{f.path}")
        removed = [f"-{p}" for p in sorted(base) if p not in {f.path for f in release.files}]
        shown = ", ".join(d for d in details + removed if not d.endswith("manifest.json")) or "same files"
        since = f" (vs {facts.current}: {shown})" if facts.current else f" ({len(release.files)} files)"
        plan.changes.append(Change("release", release.release_dir, f"create release {release.revision}{since}"))
        return
    plan.release_exists = True
    wanted = {f.path: f for f in release.files}
    for f in release.files:
        seen = present.get(f.path)
        owner_ok = f.owner is None or (seen is not None and seen.owner == f.owner)
        if seen is None or seen.type != "file" or seen.sha256 != f.sha256 or seen.mode != f.mode or not owner_ok:
            what = "missing" if seen is None else ("modified on the target" if seen.sha256 != f.sha256 else
                                                  f"mode/owner {_mode(seen.mode)} {seen.owner}")
            plan.release_files.append(f)
            where = f"{release.release_dir}/{f.path}"
            if seen is not None and seen.sha256 != f.sha256 and f.secret:
                # a secret's value is not part of the revision: a changed secret lands here too
                what = "differs from the declaration: a secret changed, or it was edited on the target"
            elif seen is not None and seen.sha256 != f.sha256:
                what = "modified on the target: drift, edited by hand; apply keeps the edited copy in the backup"
                drifted = facts.drift.get(release.revision, {}).get(f.path)
                edited = drifted.get("content") if drifted else None
                if edited is not None and not f.secret:
                    plan.drift.append((where, _text_diff(base64.b64decode(edited), f.content, where)))
            plan.changes.append(Change("release", where, f"restore {f.path} ({what})"))
    for path in sorted(present):
        if path not in wanted:
            plan.release_remove.append(path)
            plan.changes.append(Change("release", f"{release.release_dir}/{path}", f"remove unexpected file {path}"))


def _text_diff(before: bytes, after: bytes, where: str) -> str:
    a = before.decode("utf-8", "replace").splitlines(keepends=True)
    b = after.decode("utf-8", "replace").splitlines(keepends=True)
    lines = difflib.unified_diff(a, b, f"{where} (on the target)", f"{where} (declared)")
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


def _block_drift(before: str | None, after: str, project: str, env: str) -> str | None:
    """A hand edit inside our block (same revision, other lines): say which lines."""
    try:
        seen = crontab.block_of(before, project, env)
        wanted = crontab.block_of(after, project, env)
    except crontab.CrontabConflict:
        return None
    if seen is None or wanted is None or seen == wanted:
        return None
    old, new = seen.split("\n"), wanted.split("\n")  # cron's lines (crontab.lines), not str.splitlines
    if old[0] != new[0]:
        return None  # another revision: a deploy, not an edit
    gone = [line for line in old if line not in new]
    added = [line for line in new if line not in old]
    parts = [f"edited: {line!r}" for line in gone] + [f"restores: {line!r}" for line in added]
    return "drift: the managed block was edited by hand — " + "; ".join(parts[:6])


def _dir_change(d: EnsureDir, seen: PathFact | None) -> str | None:
    if seen is None:
        owner = f" {d.owner}" if d.owner else ""
        return f"create folder ({_mode(d.mode)}{owner})"
    if seen.type == "error":
        return f"not looked at: {seen.error}"
    if seen.type != "dir":
        return f"is a {seen.type}, not a folder"
    wrong = []  # of an existing folder, only what deployer enforces (see DirSpec.enforce)
    if "mode" in d.enforce and seen.mode != d.mode:
        wrong.append(f"mode {_mode(seen.mode)} -> {_mode(d.mode)}")
    if "owner" in d.enforce and d.owner and seen.owner != d.owner:
        wrong.append(f"owner {seen.owner} -> {d.owner}")
    if "group" in d.enforce and d.group and seen.group != d.group:
        wrong.append(f"group {seen.group} -> {d.group}")
    return ", ".join(wrong) or None


def ledger_path(state_dir: str) -> str:
    return f"{state_dir}/ledger.jsonl"


def records_holder(kept: KeepRecords, facts: Facts) -> str | None:
    """Who holds a job's records when it is not ``kept.owner`` (None: nothing to take over)."""
    for path in (kept.state_dir, ledger_path(kept.state_dir)):
        seen = facts.paths.get(path)
        if seen is not None and seen.type in ("dir", "file") and seen.owner != kept.owner:
            return seen.owner
    return None


def _file_change(f: EnsureFile, seen: PathFact | None) -> str | None:
    if seen is None:
        return f"create empty file ({_mode(f.mode)}{' ' + f.owner if f.owner else ''})"
    if seen.type == "error":
        return f"not looked at: {seen.error}"
    if seen.type == "link":
        return "is a symlink: replace it with a file (never followed)"
    if seen.type != "file":
        return f"is a {seen.type}, not a file"
    wrong = []
    if seen.mode != f.mode:
        wrong.append(f"mode {_mode(seen.mode)} -> {_mode(f.mode)}")
    if f.owner and seen.owner != f.owner:
        wrong.append(f"owner {seen.owner} -> {f.owner}")
    return ", ".join(wrong) or None


def rolled_back(release: Release, facts: Facts) -> RollbackMark | None:
    """The rollback record when the target is held at an older revision than the declared one."""
    held = facts.rollback
    if held and held.get("revision") == facts.current and facts.current != release.revision:
        return held
    return None


def plan(release: Release, facts: Facts, adopt: bool = False) -> Plan:
    """Everything that must change on the target for it to match the release.

    ``adopt``: also remove hand-made crontab lines that run a declared job (``apply --adopt``).
    A pipeline of steps, each adding to the plan; a target that cannot take the release
    (a missing user, an unsafe home) stops it before any change is listed."""
    p = Plan(release, facts)
    p.errors += _user_errors(release, facts) + home_errors(release, facts)
    if p.errors:
        return p
    p.warnings += home_warnings(release, facts)
    _plan_release(p)
    moved_from = _plan_moves(p)
    _plan_paths(p, moved_from)
    for user in sorted(set(release.crontab_blocks) | {u for u, c in facts.crontabs.items() if c.text is not None}):
        _plan_crontab(p, user, adopt)
    for job in release.jobs:
        for path, why in stale_legacy_locks(job, facts):
            p.stale_locks.append(path)
            p.changes.append(Change("file", path, f"remove stale legacy lock ({why})"))
    _plan_current(p)
    if (held := rolled_back(release, facts)) is not None:
        p.warnings.append(f"rolled back to {facts.current} on {held.get('at', '?')} (from {held.get('from', '?')}); "
                          f"apply moves it forward to {release.revision}")
    if not facts.cron_running:
        p.warnings.append("no cron daemon is running on this target: the jobs will not run until one is started")
    return p


def _user_errors(release: Release, facts: Facts) -> list[str]:
    """Jobs that run as a user the target lacks, or that the connecting user cannot become."""
    errors: list[str] = []
    who = facts.identity
    for job in release.jobs:
        user = job.run_as
        if user and user != who.user:
            if facts.users.get(user) is None:
                errors.append(f"job '{job.id}' runs as '{user}', and there is no such user on {facts.hostname}")
            elif who.uid != 0:
                errors.append(f"job '{job.id}' runs as '{user}', but deployer connects as '{who.user}', who is not root: "
                              f"set ansible_become: true (sudo) or run_as: {who.user}")
    return errors


def _plan_moves(p: Plan) -> dict[str, str]:
    """Renamed jobs' paths whose history follows them: new path -> old path."""
    moved_from: dict[str, str] = {}
    for job in p.release.jobs:
        for old, new in job.moves:
            if p.facts.paths.get(old) is not None and p.facts.paths.get(new) is None and new not in moved_from:
                p.moves.append((old, new))
                moved_from[new] = old
                p.changes.append(Change("move", new, f"move {old} here (job renamed to '{job.id}': its history follows)"))
    return moved_from


def _plan_paths(p: Plan, moved_from: dict[str, str]) -> None:
    """Folders, log and lock files, and the run records root takes over (a moved path is
    judged by what stands at its old place, which the move brings)."""
    facts = p.facts
    for d in p.release.dirs:
        if (why := _dir_change(d, facts.paths.get(moved_from.get(d.path, d.path)))) is not None:
            p.dirs.append(d)
            p.changes.append(Change("dir", d.path, why))
    for f in p.release.job_files:
        if (why := _file_change(f, facts.paths.get(moved_from.get(f.path, f.path)))) is not None:
            p.job_files.append(f)
            p.changes.append(Change("file", f.path, why))
    for kept in p.release.records:
        if (whose := records_holder(kept, facts)) is not None:
            p.records.append(kept)
            p.changes.append(Change("records", kept.state_dir, f"{kept.owner} keeps the run records from now on "
                                                               f"({whose} wrote them and could forge them)"))


def _plan_crontab(p: Plan, user: str, adopt: bool) -> None:
    """One user's crontab: our block spliced in, byte for byte around it; hand-made lines
    that run a declared job said (or removed, with ``adopt``)."""
    release, facts = p.release, p.facts
    seen = facts.crontabs.get(user)
    if seen is None:
        p.errors.append(f"the crontab of {user} was not read")
        return
    if seen.error:
        p.errors.append(f"cannot read the crontab of {user}: {seen.error}")
        return
    before = seen.text
    source = before or ""
    mine = [job for job in release.jobs if (job.run_as or facts.identity.user) == user]  # a hand-made line runs it from its own user's crontab
    found = hand_made(user, before, mine)
    for dup in found:
        p.hand_made.append(dup)
        _note_hand_made(p, user, dup, adopt)
    if adopt and found:
        source = without_lines(source, {d.line_number for d in found if not d.ambiguous and not d.undeclared})
    try:
        after = crontab.splice(source, release.project, release.env, release.crontab_blocks.get(user))
    except crontab.CrontabConflict as exc:
        p.errors.append(f"crontab of {user}: {exc}")
        return
    if after != (before or "") and not (before is None and after == ""):
        p.crontab_changes.append(CrontabChange(user, before, after))
        if (edit := _block_drift(before, after, release.project, release.env)) is not None:
            p.changes.append(Change("crontab", f"crontab of {user}", edit))


def _note_hand_made(p: Plan, user: str, dup: HandMade, adopt: bool) -> None:
    """What the plan says of a hand-made line that runs a declared job: a warning, or with
    ``adopt`` its removal, when it is certain which job the line is."""
    if dup.ambiguous:
        p.warnings.append(f"job '{dup.job}' may run twice: line {dup.line_number} of the crontab of {user} "
                          f"runs a script of its name ({dup.line}), and so does another line; apply --adopt "
                          "cannot tell which one the job replaces: remove it by hand (crontab -e)")
    elif dup.undeclared:
        p.warnings.append(f"job '{dup.job}' may run twice: line {dup.line_number} of the crontab of {user} "
                          f"runs a script of its name ({dup.line}); apply --adopt leaves it, since the job "
                          f"does not declare {dup.script} as the script it replaces: if it does, add "
                          f"legacy_scripts: [{dup.script}] to the job; if it is another app's, leave it")
    elif adopt:
        p.changes.append(Change("crontab", f"crontab of {user}",
                                f"adopt job '{dup.job}': remove hand-made line {dup.line_number}: {dup.line}"))
    else:
        p.warnings.append(f"job '{dup.job}' would run twice: line {dup.line_number} of the crontab of {user} "
                          f"already runs it by hand ({dup.line}); apply --adopt removes that line in the same "
                          "change (a copy stays in the backup)")


def _plan_current(p: Plan) -> None:
    """The ``current`` link: moved to the release, or caught up with what cron already runs."""
    release, facts = p.release, p.facts
    if facts.current != release.revision:
        p.set_current = True
        p.changes.append(Change("current", f"{release.deploy_home}/current", f"point current at {release.revision}"))
    elif facts.current_link != release.revision:
        # The crontab already runs it: an apply was cut between its switch and this link.
        p.set_current = True
        p.changes.append(Change("current", f"{release.deploy_home}/current",
                                f"point current at {release.revision}, which cron already runs "
                                f"(it still names {facts.current_link or 'nothing'})"))
