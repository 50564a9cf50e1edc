"""rollback and destroy: Release + Facts -> a plan for the applier. Pure, like ``plan``.

Rollback needs nothing from the controller's history: every apply leaves on the target a
backup (``backups/<time>/index.json``: the crontabs as they were and the revision that
was live), and releases are kept folders. Going back to revision R means: the crontab
blocks R had (from the backup taken when R was replaced), and ``current`` -> R. Foreign
lines are taken from the crontab as it is now, never from the backup, so a line a person
added since is not lost.

Destroy installs the crontabs without our block (the switch: nothing of ours starts any
more), then removes the releases; logs, ledgers and backups stay unless purged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from deployer.core import crontab
from deployer.core.facts import Facts
from deployer.core.plan import Change, CrontabChange, apply_request, records_holder
from deployer.core.release import KeepRecords, Release
from deployer.remote.messages import ApplyRequest


@dataclass
class LifecyclePlan:
    kind: str  # rollback | destroy
    revision: str | None  # rollback: the revision going live
    changes: list[Change] = field(default_factory=list)
    crontab_changes: list[CrontabChange] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    params: ApplyRequest | None = None  # the applier's bundle, when there are changes and no errors

    @property
    def empty(self) -> bool:
        return not self.changes and not self.crontab_changes


def history(facts: Facts) -> list[dict[str, Any]]:
    """The revisions that were live on this target, newest first: (revision, until, backup)."""
    seen: list[dict[str, Any]] = []
    for record in reversed(facts.backups):
        revision, to = record.get("revision"), record.get("to")
        if revision and revision != to:
            seen.append({"revision": revision, "replaced_at": record.get("at"), "by": to,
                         "kind": record.get("kind", "apply"), "backup": record.get("name"),
                         "kept": revision in facts.releases})
    return seen


def _previous(facts: Facts) -> str | None:
    """The revision the current one replaced (by an apply: undoing a rollback is an apply)."""
    for record in reversed(facts.backups):
        if record.get("to") == facts.current and record.get("kind", "apply") == "apply" \
                and record.get("revision") and record.get("revision") != facts.current:
            return str(record["revision"])
    return None


def plan_rollback(release: Release, facts: Facts, to: str | None = None) -> LifecyclePlan:
    project, env = release.project, release.env
    current = facts.current
    if current is None:
        return LifecyclePlan("rollback", None, errors=["nothing of this project/environment is deployed here"])
    if to is None:
        target = _previous(facts)
        if target is None:
            return LifecyclePlan("rollback", None, errors=[
                f"no earlier revision is recorded here (live: {current}); nothing to roll back to"])
    else:
        matches = sorted({r for r in facts.releases if r.startswith(to)} |
                         {str(b["revision"]) for b in facts.backups if b.get("revision") and str(b["revision"]).startswith(to)})
        if not matches:
            known = ", ".join(h["revision"] for h in history(facts)) or "none"
            return LifecyclePlan("rollback", None, errors=[f"revision {to} is unknown here (revisions that were live: {known})"])
        if len(matches) > 1:
            return LifecyclePlan("rollback", None, errors=[f"revision {to} is ambiguous: {', '.join(matches)}"])
        target = matches[0]
    p = LifecyclePlan("rollback", target)
    if target == current:
        return p  # already there: nothing to do
    if target not in facts.releases:
        p.errors.append(f"release {target} is no longer kept on this target (pruned: keep_releases is {release.keep_releases}); "
                        "roll back by declaring that version and applying it")
        return p
    if drift := facts.drift.get(target):
        where = ", ".join(f"{path} ({info.get('why')})" for path, info in sorted(drift.items()))
        p.errors.append(f"release {target} differs from its manifest on the target: {where}; refusing to bring it back")
        return p
    # The crontabs as they were while `target` was live: the backup of the change that replaced it.
    record = next((b for b in reversed(facts.backups) if b.get("revision") == target and b.get("to") != target), None)
    if record is None:
        p.errors.append(f"no backup of the crontabs of revision {target} is kept here; cannot restore its entries")
        return p
    saved: dict[str, str | None] = dict(record.get("crontabs") or {})
    # The blocks as the release installed them (its manifest): a hand edit kept in the backup
    # does not come back. Releases older than that record: the backup's blocks.
    installed = facts.release_blocks.get(target) or {}
    blocks: dict[str, str | None] = {}
    try:
        users = set(saved) | set(installed) | {u for u, c in facts.crontabs.items() if crontab.block_of(c.text, project, env)}
        for user in sorted(users):
            blocks[user] = installed.get(user) if installed else crontab.block_of(saved.get(user), project, env)
            now = facts.crontabs.get(user)
            if now is None or now.error:
                p.errors.append(f"cannot read the crontab of {user} here{': ' + now.error if now and now.error else ''}")
                continue
            after = crontab.splice(now.text or "", project, env, blocks[user])
            if after != (now.text or ""):
                p.crontab_changes.append(CrontabChange(user, now.text, after))
    except crontab.CrontabConflict as exc:
        p.errors.append(str(exc))
        return p
    p.changes.append(Change("current", f"{facts.deploy_home}/current", f"roll back from {current} to {target}"))
    # Whoever's crontab starts a job in the restored blocks writes its records: back to the
    # job's user for a release from before root kept them, to root for one after.
    records = []
    for user, block in sorted(blocks.items()):
        for job_id in sorted(crontab.block_jobs(block)):
            kept = KeepRecords(f"{facts.deploy_home}/state/{job_id}", user)
            if (whose := records_holder(kept, facts)) is not None:
                records.append(kept)
                p.changes.append(Change("records", kept.state_dir, f"{user} writes the run records again ({whose} kept them)"))
    request = apply_request(release, facts, "rollback", target, p.crontab_changes, records)
    request["set_current"] = True
    request["rollback"] = {"from": current, "blocks": blocks}
    p.params = request
    return p


def plan_destroy(release: Release, facts: Facts, purge_logs: bool = False) -> LifecyclePlan:
    project, env = release.project, release.env
    p = LifecyclePlan("destroy", None)
    try:
        for user, seen in sorted(facts.crontabs.items()):
            if seen.error:
                if seen.text is None and seen.error == "no such user":
                    continue
                p.errors.append(f"cannot read the crontab of {user}: {seen.error}")
                continue
            if crontab.block_of(seen.text, project, env) is not None:
                p.crontab_changes.append(CrontabChange(user, seen.text, crontab.splice(seen.text or "", project, env, None)))
    except crontab.CrontabConflict as exc:
        p.errors.append(str(exc))
    if p.errors:
        return p
    home = release.deploy_home
    files = [j.lock_file for j in release.jobs]
    trees: list[str] = []
    if purge_logs:  # the log, its rotations, the ledger (state dir), then the whole home
        files += [path for j in release.jobs for path in [j.log_file] +
                  [f"{j.log_file}.{n}" for n in range(1, j.retention.log_files + 2)]]
        trees += [j.state_dir for j in release.jobs]
    for user in (c.user for c in p.crontab_changes):
        p.changes.append(Change("crontab", f"crontab of {user}", "remove the managed block (other lines stay as they are)"))
    if facts.releases or facts.current:
        p.changes.append(Change("release", f"{home}/releases", f"remove {len(facts.releases)} release(s) and current"))
    for path in files:
        if facts.paths.get(path) is not None:  # rotated logs are not probed: removed if there, not listed
            p.changes.append(Change("file", path, "remove"))
    if purge_logs and facts.paths.get(home) is not None:
        p.changes.append(Change("dir", home, "remove the run history, backups and what else deployer put there "
                                             "(--purge-logs); the folder too, if nothing else is in it"))
    if p.empty:
        return p
    request = apply_request(release, facts, "destroy", None, p.crontab_changes)
    request["destroy"] = {"files": files, "trees": trees, "purge": purge_logs}
    p.params = request
    return p
