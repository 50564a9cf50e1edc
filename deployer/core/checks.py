"""verify's checks: Facts + Release + Plan -> pass/warn/fail lines. Pure."""

from __future__ import annotations

from dataclasses import dataclass

from deployer.core.plan import Plan

PASS, WARN, FAIL = "pass", "warn", "fail"


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # pass | warn | fail
    detail: str
    job: str | None = None


def checks(plan: Plan) -> list[Check]:
    release, facts = plan.release, plan.facts
    out: list[Check] = []
    for error in plan.errors:
        out.append(Check("target", FAIL, error))

    crontab_users = sorted(release.crontab_blocks)
    drifted = {c.user for c in plan.crontab_changes}
    for user in crontab_users:
        if user in drifted:
            out.append(Check("crontab", FAIL, f"the crontab of {user} does not hold the declared block (run plan to see the diff)"))
        else:
            jobs = sum(1 for j in release.jobs if (j.run_as or facts.identity.user) == user)
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
        if change.kind in {"dir", "file"}:
            out.append(Check("files", FAIL, f"{change.path}: {change.summary}"))
        elif change.kind == "current":
            out.append(Check("release", FAIL, f"current points at {facts.current or 'nothing'}, not {release.revision}"))
    if not any(c.kind in {"dir", "file"} for c in plan.changes):
        out.append(Check("files", PASS, f"{len(release.dirs)} folders and {len(release.job_files)} log/lock files have their owner and mode"))

    for user, crontab in sorted(facts.crontabs.items()):
        leaked = [v for v in release.secret_values if len(v) >= 4 and crontab.text and v in crontab.text]
        if leaked:
            out.append(Check("secrets", FAIL, f"the crontab of {user} contains the value of a declared secret: "
                                              "move it to the job's env (a secret reference) and rotate it"))

    if facts.cron_running:
        out.append(Check("cron-daemon", PASS, f"{facts.cron_process} is running"))
    else:
        out.append(Check("cron-daemon", FAIL, "no cron daemon is running: no job will run (start cron)"))

    from deployer.core.health import job_checks, space_checks  # health builds on Check

    out.extend(space_checks(facts))
    for job in release.jobs:
        out.extend(job_checks(job, facts))
    return out
