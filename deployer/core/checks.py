"""verify's checks: Facts + Release + Plan -> pass/warn/fail lines. Pure."""

from __future__ import annotations

from deployer.core import crontab
from deployer.core.alertstate import alert_checks
from deployer.core.check import FAIL, PASS, WARN, Check
from deployer.core.facts import Facts
from deployer.core.health import job_checks, space_checks
from deployer.core.plan import Plan, ledger_path, rolled_back
from deployer.core.release import crontab_user
from deployer.core.timing import CronRules, cron_rules
from deployer.remote.cronengine import FLAVOUR_NAMES
from deployer.remote.messages import RollbackMark


def _rolled_back_checks(plan: Plan, held: RollbackMark) -> list[Check]:
    """A target held at an older revision by ``rollback`` is audited against that revision:
    its crontab blocks as restored, its release against its own manifest."""
    release, facts = plan.release, plan.facts
    revision = facts.current
    out = [Check("rollback", WARN, f"held at {revision} by a rollback on {held.get('at', '?')} (from {held.get('from', '?')}); "
                                   f"the declaration is at {release.revision}: apply to go forward")]
    installed = facts.release_blocks.get(revision or "") or {}
    # what the revision's manifest says it installs, byte for byte; for older releases, the rollback's record
    expected = {u: installed.get(u) for u in set(installed) | set(held.get("blocks") or {})} if installed else held.get("blocks") or {}
    for user, block in sorted(expected.items()):
        seen = facts.crontabs.get(user)
        try:
            now = crontab.block_of(seen.text, release.project, release.env) if seen else None
        except crontab.CrontabConflict as exc:
            out.append(Check("crontab", FAIL, f"the crontab of {user}: {exc}"))
            continue
        if now == block:
            out.append(Check("crontab", PASS, f"the crontab of {user} holds the block of revision {revision}"))
        else:
            out.append(Check("crontab", FAIL, f"the crontab of {user} does not hold the block revision {revision} installs, "
                                              "byte for byte (edited by hand?): apply to go forward, or rollback again"))
    drift = facts.drift.get(revision or "", {})
    if revision not in facts.releases:
        out.append(Check("release", FAIL, f"release {revision} is missing"))
    elif drift:
        out += [Check("release", FAIL, f"release {revision}: {path} {info.get('why')}") for path, info in sorted(drift.items())]
    else:
        out.append(Check("release", PASS, f"release {revision}: {len(facts.releases[revision or ''])} files match its manifest"))
    return out


def checks(plan: Plan) -> list[Check]:
    release, facts = plan.release, plan.facts
    out: list[Check] = []
    for error in plan.errors:
        out.append(Check("target", FAIL, error))
    if (held := rolled_back(release, facts)) is not None:
        return out + _rolled_back_checks(plan, held) + _runtime_checks(plan, live_jobs(held))

    crontab_users = sorted(release.crontab_blocks)
    drifted = {c.user for c in plan.crontab_changes}
    for user in crontab_users:
        if user in drifted:
            edit = next((c.summary for c in plan.changes if c.kind == "crontab" and c.path == f"crontab of {user}"), None)
            out.append(Check("crontab", FAIL, f"the crontab of {user}: {edit}" if edit else
                             f"the crontab of {user} does not hold the declared block (run plan to see the diff)"))
        else:
            jobs = sum(1 for j in release.jobs if crontab_user(j, facts.identity) == user)
            out.append(Check("crontab", PASS, f"the crontab of {user} holds the declared block ({jobs} job{'s' if jobs != 1 else ''})"))
    for user in sorted(drifted - set(crontab_users)):
        out.append(Check("crontab", FAIL, f"the crontab of {user} still holds a block of ours that is no longer declared"))

    release_changes = [c for c in plan.changes if c.kind == "release"]
    if not release_changes:
        out.append(Check("release", PASS, f"release {release.revision}: {len(release.files)} files match their checksums"))
    else:
        for change in release_changes:
            out.append(Check("release", FAIL, change.summary))
    for change in plan.changes:
        if change.kind in {"dir", "file", "move"}:
            out.append(Check("files", FAIL, f"{change.path}: {change.summary}"))
        elif change.kind == "current":
            out.append(Check("release", FAIL, f"current points at {facts.current_link or 'nothing'}, not {release.revision}"))
    if not any(c.kind in {"dir", "file"} for c in plan.changes):
        out.append(Check("files", PASS, f"{len(release.dirs)} folders and {len(release.job_files)} log/lock files have their owner and mode"))

    for dup in plan.hand_made:
        if dup.undeclared and not dup.ambiguous:  # perhaps another app's script of the same name
            out.append(Check("duplicate", WARN, f"job '{dup.job}' may also run from line {dup.line_number} of the "
                                                f"crontab of {dup.user} ({dup.line}): if {dup.script} is the job's old "
                                                f"script, declare legacy_scripts: [{dup.script}] and apply --adopt",
                             job=dup.job))
            continue
        fix = ("another line runs a script of the same name: remove the one it replaces by hand (crontab -e)"
               if dup.ambiguous else "apply --adopt removes that line")
        out.append(Check("duplicate", FAIL, f"job '{dup.job}' also runs from line {dup.line_number} of the crontab of "
                                            f"{dup.user}, made by hand ({dup.line}): it runs twice; {fix}", job=dup.job))
    for user, tab in sorted(facts.crontabs.items()):
        leaked = [v for v in release.secret_values if len(v) >= 4 and tab.text and v in tab.text]
        if leaked:
            out.append(Check("secrets", FAIL, f"the crontab of {user} contains the value of a declared secret: "
                                              "move it to the job's env (a secret reference) and rotate it"))

    return out + _runtime_checks(plan, {j.id for j in release.jobs})


def live_jobs(held: RollbackMark) -> set[str]:
    """Job ids of the restored blocks."""
    return set().union(*(crontab.block_jobs(block) for block in (held.get("blocks") or {}).values()))


def _trust_check(plan: Plan, job_ids: set[str]) -> Check:
    """Whose word the run records are. Deployed by root, a job of another user is started from
    root's crontab by a wrapper that keeps its records in root's folder and runs the job as its
    user: they are root's word. A job still started from its user's crontab (a release from
    before, an apply cut before it took the records over) has them written by that user, who
    can append a `success` line: verify says so instead of implying more."""
    facts = plan.facts
    who = facts.identity
    if who.uid != 0:
        return Check("trust", PASS, f"deployer is {who.user} here, not root: every job, its records and this audit "
                                    f"are as trustworthy as {who.user}")
    started_by_root = crontab.block_jobs(_our_block(plan, who.user))
    by_user: dict[str, list[str]] = {}
    kept: list[str] = []
    for job in plan.release.jobs:
        user = job.run_as or who.user
        if job.id not in job_ids or user == who.user:
            continue
        if job.id in started_by_root and _owned_by(facts, who.user, job.state_dir, ledger_path(job.state_dir)):
            kept.append(job.id)
        else:
            by_user.setdefault(user, []).append(job.id)
    if by_user:
        whose = "; ".join(f"{', '.join(sorted(ids))} by {user}" for user, ids in sorted(by_user.items()))
        return Check("trust", WARN, f"runs are recorded by the jobs' own users ({whose}), who can forge them: "
                                    "their runs and successes are those users' word (deployer apply gives them to root)")
    if kept:
        return Check("trust", PASS, f"root keeps the run records of every job; {len(kept)} run as their own users, "
                                    "who cannot forge them")
    return Check("trust", PASS, "every job runs as root; root keeps their records")


def _our_block(plan: Plan, user: str) -> str | None:
    seen = plan.facts.crontabs.get(user)
    try:
        return crontab.block_of(seen.text if seen else None, plan.release.project, plan.release.env)
    except crontab.CrontabConflict:
        return None


def _owned_by(facts: Facts, user: str, *paths: str) -> bool:
    """Every one of ``paths`` that exists belongs to ``user``."""
    return all(seen is None or seen.owner == user for seen in (facts.paths.get(p) for p in paths))


def cron_daemon_check(facts: Facts, rules: CronRules) -> Check:
    """The running daemon, and whose rules the fire times follow; a warning when the
    inventory names another cron than the one that runs (the inventory still wins)."""
    if rules.source == "inventory" and facts.cron_flavour not in (None, rules.flavour):
        return Check("cron-daemon", WARN, f"{facts.cron_process} is running ({FLAVOUR_NAMES[facts.cron_flavour]}), "
                                          f"but fire times follow {rules}: fix or remove that variable")
    return Check("cron-daemon", PASS, f"{facts.cron_process} is running; fire times by {rules}")


def _runtime_checks(plan: Plan, job_ids: set[str]) -> list[Check]:
    """What does not depend on the revision: cron running, disk, each job's runs."""
    release, facts = plan.release, plan.facts
    out: list[Check] = []
    rules = cron_rules(release.cron_flavour, facts.cron_flavour)
    if facts.cron_running:
        out.append(cron_daemon_check(facts, rules))
    else:
        ignored = facts.cron_ignored
        # processes named cron that are not the daemon (a user's, a zombie, a container's)
        but = f" (not counted: {'; '.join(ignored)})" if ignored else ""
        out.append(Check("cron-daemon", FAIL, f"no cron daemon is running: no job will run (start cron){but}"))

    out.append(_trust_check(plan, job_ids))

    out.extend(space_checks(facts))
    for job in release.jobs:
        if job.id in job_ids:
            out.extend(job_checks(job, facts, rules=rules))
            out.extend(alert_checks(job, facts.runtime(job.id), facts.now))
    # What the probe could not read or parse (written by the job's user, or damaged): said, skipped.
    out.extend(Check("records", WARN, problem) for problem in facts.problems)
    for job in release.jobs:
        if job.id in job_ids:
            out.extend(Check("records", WARN, str(p), job.id) for p in facts.runtime(job.id).get("problems") or [])
    return out
