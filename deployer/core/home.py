"""deployer's home on a target when it was already there (an operator's folder declared as
``home:``): kept as it is, refused when others can write it. Pure: facts in, messages out.

The home, its ``releases`` and its ``state`` are made 0755 when deployer makes them. One that
exists keeps its owner and mode (folders deployer did not create are never chowned or
chmodded unless declared), but whoever can add, rename or remove entries there could swap a
release or a run record under cron: such a home is refused, before anything is written."""

from __future__ import annotations

from deployer.core.facts import Facts, PathFact
from deployer.core.release import Release

OWN_FOLDERS = ("", "/releases", "/state")


def _writable_by_others(seen: PathFact, me: str) -> bool:
    return seen.owner not in ("root", me) or bool(seen.mode & 0o022)


def home_errors(release: Release, facts: Facts) -> list[str]:
    me = facts.identity.user
    out = []
    for suffix in OWN_FOLDERS:
        path = release.deploy_home + suffix
        seen = facts.paths.get(path)
        if seen is not None and seen.type == "dir" and _writable_by_others(seen, me):
            out.append(f"{path} is writable by others than {me} (owner {seen.owner}, mode {seen.mode:04o}): deployer "
                       "keeps its releases and run records there and writes nothing into it; make it "
                       f"{me}'s and not group- or world-writable (chmod go-w), or declare another home")
    return out


def home_warnings(release: Release, facts: Facts) -> list[str]:
    """An existing home that the jobs' users may not walk through (their wrapper opens each
    folder on its way, which needs read and search): their runs would fail."""
    others = sorted({j.run_as for j in release.jobs if j.run_as and j.run_as != facts.identity.user})
    out = []
    for suffix in OWN_FOLDERS:
        path = release.deploy_home + suffix
        seen = facts.paths.get(path)
        if others and seen is not None and seen.type == "dir" and seen.mode & 0o005 != 0o005:
            out.append(f"{path} is mode {seen.mode:04o} (kept: deployer did not create it): "
                       f"{', '.join(others)} may not reach the run wrapper and records under it; chmod o+rx {path}")
    return out
