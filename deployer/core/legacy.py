"""What a hand-made setup left behind that apply cleans: its lock files. Pure: facts in.

Plan removes the stale ones and health reports the others; both read them from here.
"""

from __future__ import annotations

from deployer.core.desired import JobSpec
from deployer.core.facts import Facts


def stale_legacy_locks(job: JobSpec, facts: Facts) -> list[tuple[str, str]]:
    """(path, why) of the job's legacy lock files that nothing holds any more."""
    stale = []
    for path, info in facts.runtime(job.id).get("legacy_locks", {}).items():
        if not info or info.get("type") != "file" or info.get("held"):
            continue
        pid = info.get("pid")
        if pid and not info.get("alive"):
            stale.append((path, f"pid {pid} is gone"))
        elif not pid and float(info.get("age", 0)) > job.timeout:
            stale.append((path, f"no pid in it, {int(float(info.get('age', 0)) // 60)} min old"))
    return stale
