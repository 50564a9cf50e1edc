"""What should be on one target: the output of ``render``, the input of ``plan``.

Paths may start with ``HOME``: the home directory of the user deployer connects as on
the target, which only the probe knows. ``materialize`` swaps it for the real one, so
``render`` stays pure and needs no connection.
"""

from __future__ import annotations

from dataclasses import dataclass

from deployer.config.project import RetentionPolicy
from deployer.remote.messages import Concurrency

# A NUL can appear in no declared value (args and env values reject it), so these marks
# cannot collide with anything the operator wrote.
HOME = "\x00~\x00"
# Where deployer keeps its state by default: /var/lib for root, ~/.local/share for others
# (root's home is not readable by the users jobs run as; a user cannot write /var/lib).
DATA = "\x00data\x00"


def data_root(home: str, uid: int) -> str:
    return "/var/lib" if uid == 0 else (home.rstrip("/") or "") + "/.local/share"


def expand_home(text: str, home: str, uid: int) -> str:
    return text.replace(DATA, data_root(home, uid)).replace(HOME, home.rstrip("/") or "/")


def show_home(text: str) -> str:
    """For display before the target is known."""
    return text.replace(HOME, "~").replace(DATA, "<data root>")


@dataclass(frozen=True)
class JobSpec:
    """One job as the run wrapper on the target will see it."""

    id: str
    description: str
    schedule: str
    script: str | None  # file name under the release's scripts/
    command: str | None
    args: tuple[str, ...]
    run_as: str | None  # None: the connecting user
    log_file: str
    lock_file: str
    state_dir: str
    timeout: int
    concurrency: Concurrency
    workdir: str | None
    env: tuple[tuple[str, str], ...]
    secret_names: frozenset[str]
    legacy_locks: tuple[str, ...] = ()
    legacy_scripts: tuple[str, ...] = ()  # the hand-made setup's scripts it replaces (adoption)
    retention: RetentionPolicy = RetentionPolicy()
    # (old path, new path) of a renamed job's state and log: moved once, if only the old exists
    moves: tuple[tuple[str, str], ...] = ()
    # alerts/<id>.json (core/alertconfig.py): its text (secrets resolved), the same masked, and
    # the secrets it holds; None: the job has no alerts, and no such file
    alerts: str | None = None
    alerts_public: str | None = None
    alert_secrets: frozenset[str] = frozenset()


@dataclass(frozen=True)
class DirSpec:
    path: str
    mode: int
    owner: str | None = None  # None: leave as created by the connecting user
    group: str | None = None
    # What apply sets on the folder when it already exists. A folder deployer did not create
    # (a shared /var/log, another app's folder) keeps its owner, mode and sticky bit unless
    # the declaration says otherwise: only the declared attributes are in here.
    enforce: tuple[str, ...] = ("mode", "owner", "group")


@dataclass(frozen=True)
class DesiredState:
    """Everything deployer manages on one target, before the target is observed."""

    project: str
    env: str
    target: str
    deploy_home: str
    python: str
    keep_releases: int
    jobs: tuple[JobSpec, ...]
    files: tuple[tuple[str, bytes], ...]  # (name under scripts/, content)
    script_names: frozenset[str]  # which of ``files`` are task scripts (made executable)
    dirs: tuple[DirSpec, ...]
    skipped: tuple[tuple[str, str], ...] = ()  # (job id, why it is not on this target)
    cron_flavour: str | None = None  # the inventory's deployer_cron_flavour (None: not set)
