"""Targets of an environment, read from its Ansible inventory with ansible-core's own code.

Reading the inventory with ansible-core (rather than parsing hosts.yml ourselves) keeps
every variable meaning the same to ``deployer`` and to ``ansible-playbook``: group_vars,
host_vars, ranges, children groups and the ``ansible_*`` connection variables.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deployer.errors import InvalidInput, Problem

# Ansible's own warnings would go to stderr in its own words; we turn what matters into
# input errors and keep the rest quiet. Set before ansible reads its configuration.
os.environ.setdefault("ANSIBLE_INVENTORY_UNPARSED_FAILED", "True")
os.environ.setdefault("ANSIBLE_LOCALHOST_WARNING", "False")
os.environ.setdefault("ANSIBLE_INVENTORY_UNPARSED_WARNING", "False")

CONNECTIONS = {
    "local": "local",
    "ansible.builtin.local": "local",
    "ssh": "ssh",
    "ansible.builtin.ssh": "ssh",
    "paramiko": "ssh",
    "paramiko_ssh": "ssh",
    "ansible.builtin.paramiko_ssh": "ssh",
    "smart": "ssh",
    "community.general.incus": "incus",
    "incus": "incus",
}

# Variables ansible adds to every host; not part of what the user declared.
_MAGIC = {
    "ansible_facts", "ansible_playbook_python", "ansible_config_file", "ansible_version", "playbook_dir",
    "omit", "groups", "group_names", "inventory_hostname", "inventory_hostname_short", "inventory_dir",
    "inventory_file", "hostvars", "ansible_inventory_sources", "ansible_check_mode", "ansible_diff_mode",
    "ansible_forks", "ansible_run_tags", "ansible_skip_tags", "ansible_verbosity", "environment", "role_names",
}


@dataclass(frozen=True)
class Target:
    """One host of an environment, as the inventory describes it."""

    name: str
    connection: str  # local | ssh | incus
    groups: tuple[str, ...] = ()
    vars: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def address(self) -> str:
        return str(self.vars.get("ansible_host", self.name))

    @property
    def port(self) -> int | None:
        port = self.vars.get("ansible_port")
        return int(port) if port is not None else None

    @property
    def user(self) -> str | None:
        user = self.vars.get("ansible_user") or self.vars.get("ansible_ssh_user")
        return str(user) if user else None

    @property
    def become(self) -> bool:
        return _truthy(self.vars.get("ansible_become", False))

    @property
    def become_user(self) -> str:
        return str(self.vars.get("ansible_become_user") or "root")

    def matches(self, pattern: str) -> bool:
        """A host name or a group name."""
        return pattern == self.name or pattern in self.groups


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "on", "y"}
    return bool(value)


def _plain(value: Any) -> Any:
    """Ansible 2.19 wraps inventory values in tagged types; templates want plain data."""
    try:
        return json.loads(json.dumps(value, default=str))
    except (TypeError, ValueError):
        return str(value)


YAML_SUFFIXES = {".yml", ".yaml", ".json"}


def _check_yaml_files(path: Path, shown: str) -> None:
    """Syntax errors in the inventory's YAML files, with file and line.

    ansible-core tries every inventory plugin in turn and reports only that none parsed
    the source; a person needs the file and the line, so we parse the YAML ourselves first.
    """
    from deployer.config.yamlsource import load_yaml_file

    candidates = [path] if path.is_file() else sorted(
        p for p in path.rglob("*") if p.is_file() and p.suffix in YAML_SUFFIXES)
    problems: list[Problem] = []
    for candidate in candidates:
        if candidate.suffix not in YAML_SUFFIXES:
            continue
        relative = candidate.relative_to(path) if candidate != path else None
        name = f"{shown.rstrip('/')}/{relative}" if relative else shown
        try:
            load_yaml_file(candidate, name)
        except InvalidInput as exc:
            problems.extend(Problem(f"cannot read the inventory: {p.message}", file=p.file, line=p.line) for p in exc.problems)
    if problems:
        raise InvalidInput(problems)


class _QuietAnsible:
    """Keep ansible-core's warnings (one per inventory plugin it tried) off our stderr."""

    def __enter__(self) -> list[str]:
        from ansible.utils.display import Display

        self.display = Display()
        self.saved = self.display.warning
        self.caught: list[str] = []
        self.display.warning = lambda msg, *a, **k: self.caught.append(str(msg))
        return self.caught

    def __exit__(self, *exc: object) -> None:
        self.display.warning = self.saved


CACHE_VERSION = 1


def _cache_key(path: Path) -> str | None:
    """A key for a static inventory (YAML/INI files only), or None when it may be dynamic.

    Importing ansible-core and parsing costs about 0.3 s per command, half of a no-op
    apply on a fleet. A static inventory gives the same hosts and variables for the same
    files, ansible-core version and ANSIBLE_* settings, so that result is cached.
    """
    import hashlib
    from importlib.metadata import PackageNotFoundError, version

    try:
        ansible_version = version("ansible-core")
    except PackageNotFoundError:
        return None
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    shape = Path(__file__).stat().st_mtime_ns  # the cached Target's definition lives here
    digest = hashlib.sha256(f"{CACHE_VERSION}\0{shape}\0{ansible_version}\0{path.resolve()}\0".encode())
    for f in files:
        st = f.stat()
        if st.st_mode & 0o111 or f.suffix in {".py", ".sh"}:
            return None  # an inventory script: its output may change at any time
        data = f.read_bytes()
        if b"plugin:" in data:
            return None  # an inventory plugin (cloud, constructed...): dynamic
        digest.update(f"{f}\0".encode() + hashlib.sha256(data).digest())
    config = [Path(p) for p in (os.environ.get("ANSIBLE_CONFIG", ""), "ansible.cfg", str(Path.home() / ".ansible.cfg"),
                                "/etc/ansible/ansible.cfg") if p]
    for c in config:
        if c.is_file():
            digest.update(f"{c.resolve()}\0".encode() + hashlib.sha256(c.read_bytes()).digest())
    for name in sorted(k for k in os.environ if k.startswith("ANSIBLE_")):
        digest.update(f"{name}={os.environ[name]}\0".encode())
    return digest.hexdigest()[:32]


def _cache_file(key: str) -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "deployer" / f"inventory-{key}.json"


def load_inventory(path: Path, shown: str) -> list[Target]:
    """All hosts of one inventory (a file or a directory), in inventory order."""
    if not path.exists():
        raise InvalidInput([Problem("the inventory does not exist", file=shown)])
    key = _cache_key(path) if os.environ.get("DEPLOYER_INVENTORY_CACHE", "1") != "0" else None
    if key is not None:
        try:
            cached = json.loads(_cache_file(key).read_text())
            return [Target(t["name"], t["connection"], tuple(t["groups"]), t["vars"]) for t in cached]
        except (OSError, ValueError, KeyError, TypeError):
            pass
    targets = _load_with_ansible(path, shown)
    if key is not None:
        try:
            cache = _cache_file(key)
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(f".tmp-{os.getpid()}")
            tmp.write_text(json.dumps([{"name": t.name, "connection": t.connection, "groups": list(t.groups),
                                        "vars": t.vars} for t in targets]))
            tmp.replace(cache)
        except OSError:
            pass  # a read-only home: no cache, same result
    return targets


def _load_with_ansible(path: Path, shown: str) -> list[Target]:
    from ansible.errors import AnsibleError
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.vars.manager import VariableManager

    _check_yaml_files(path, shown)
    loader = DataLoader()
    with _QuietAnsible() as warnings:
        try:
            inventory = InventoryManager(loader=loader, sources=[str(path)])
            variables = VariableManager(loader=loader, inventory=inventory)
            hosts = inventory.get_hosts("all")
        except AnsibleError as exc:
            detail = next((w for w in warnings if "\n" not in w.strip()), "") or (str(exc).splitlines()[0] if str(exc) else "")
            raise InvalidInput([Problem(f"cannot read the inventory: {detail or type(exc).__name__}", file=shown)]) from None
    if not hosts:
        raise InvalidInput([Problem("the inventory has no hosts; add at least one under all.hosts or a group", file=shown)])

    targets: list[Target] = []
    problems: list[Problem] = []
    for host in hosts:
        with _QuietAnsible():
            host_vars = variables.get_vars(host=host)
        plain = {k: _plain(v) for k, v in host_vars.items() if k not in _MAGIC}
        raw_connection = str(plain.get("ansible_connection") or "ssh")
        connection = CONNECTIONS.get(raw_connection)
        if connection is None:
            known = ", ".join(sorted({k for k in CONNECTIONS if "." in k or k in {"local", "ssh"}}))
            problems.append(Problem(f"host '{host.name}': ansible_connection '{raw_connection}' is not supported (use one of: {known})", file=shown))
            continue
        groups = tuple(g.name for g in host.get_groups() if g.name not in {"all"})
        targets.append(Target(host.name, connection, groups, plain))
    if problems:
        raise InvalidInput(problems)
    return targets


def limit_targets(targets: list[Target], limit: str | None, shown: str) -> list[Target]:
    """Keep hosts named by ``--limit`` (comma-separated host or group names)."""
    if not limit:
        return targets
    patterns = [p.strip() for p in limit.split(",") if p.strip()]
    unknown = [p for p in patterns if not any(t.matches(p) for t in targets)]
    if unknown:
        names = ", ".join(t.name for t in targets)
        raise InvalidInput([Problem(f"--limit {', '.join(unknown)}: no such host or group in the inventory (hosts: {names})", file=shown)])
    return [t for t in targets if any(t.matches(p) for p in patterns)]
