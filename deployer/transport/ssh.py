"""SSH targets: ONE paramiko connection per host, opened on first use, reused, closed by close().

The inventory variables mean what they mean to Ansible: ``ansible_host`` (else the inventory
name), ``ansible_port``, ``ansible_user``, ``ansible_ssh_private_key_file``, ``ansible_timeout``,
``ansible_become`` (+ ``ansible_become_user``; sudo -n, see base.Become) and
``ansible_ssh_common_args``/``ansible_ssh_extra_args``, of which only ``-J``, ``-o ProxyJump=``,
``-o ProxyCommand=``, ``-o UserKnownHostsFile=``, ``-o StrictHostKeyChecking=``,
``-o ConnectTimeout=`` and ``-o Port=`` are used (other options are ignored). As with ``ssh``,
``~/.ssh/config`` applies to the address: HostName, User, Port, IdentityFile, ProxyJump,
ProxyCommand, HostKeyAlias, UserKnownHostsFile, ConnectTimeout, StrictHostKeyChecking (only
``accept-new``/``no`` mean anything here: they accept NEW keys; a changed key is always
refused). ``deployer_ssh_jump: [user@]host[:port]`` names a jump host too (several,
comma-separated, like ProxyJump).

Host keys are checked strictly against ``~/.ssh/known_hosts`` (or UserKnownHostsFile),
``/etc/ssh/ssh_known_hosts`` and, first, the file named by the inventory variable
``deployer_known_hosts`` or the environment variable ``DEPLOYER_KNOWN_HOSTS``. An unknown
host is refused with its fingerprint and how to trust it; with ``--accept-new-host-keys``
its key is recorded in the first of those files (like OpenSSH's ``StrictHostKeyChecking
accept-new``); a changed key is always refused.

Every failure on the way to the host is ``Unreachable`` (exit 4) with the host, the address
and a short reason; never a traceback.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import getpass
import hashlib
import logging
import os
import re
import shlex
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paramiko
from paramiko.auth_strategy import AuthSource, AuthStrategy, InMemoryPrivateKey

from deployer.config.inventory import Target
from deployer.errors import TargetError, Unreachable
from deployer.transport import ConnectOptions
from deployer.transport.address import parse_ssh_address
from deployer.transport.base import Become, Counters, Result

# paramiko logs its transport thread's errors (with tracebacks) at ERROR level; without a
# handler Python would print them on stderr. Our errors say what happened, in one line.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

DEFAULT_TIMEOUT = 10.0
MAX_JUMPS = 8
GLOBAL_KNOWN_HOSTS = "/etc/ssh/ssh_known_hosts"
DEFAULT_IDENTITIES = ("~/.ssh/id_rsa", "~/.ssh/id_ecdsa", "~/.ssh/id_ed25519")
THREADED_STDIN = 256 * 1024  # below the server's channel window, stdin is sent without a thread
CHUNK = 65536


# --------------------------------------------------------------------------- small helpers


def fingerprint(key: paramiko.PKey) -> str:
    """``SHA256:...`` as ``ssh-keygen -l`` shows it."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def known_hosts_name(host: str, port: int) -> str:
    """How OpenSSH names a host in known_hosts."""
    return host if port == 22 else f"[{host}]:{port}"


def _shown(path: str | Path) -> str:
    """A path with the home directory as ``~``, for messages."""
    text = str(path)
    home = os.path.expanduser("~")
    if home not in ("", "/") and (text == home or text.startswith(home.rstrip("/") + "/")):
        return "~" + text[len(home.rstrip("/")):]
    return text


_config_lock = threading.Lock()
_config_cache: dict[str, tuple[int, paramiko.SSHConfig | None]] = {}


def ssh_config() -> paramiko.SSHConfig | None:
    """``~/.ssh/config``, parsed once per process (None when there is none)."""
    path = os.path.expanduser("~/.ssh/config")
    try:
        mtime = os.stat(path).st_mtime_ns
    except OSError:
        return None
    with _config_lock:
        cached = _config_cache.get(path)
        if cached and cached[0] == mtime:
            return cached[1]
        try:
            config = paramiko.SSHConfig.from_path(path)
        except Exception as exc:  # noqa: BLE001 - a config paramiko cannot read is the user's to fix
            raise Unreachable(f"cannot read {_shown(path)}: {type(exc).__name__}: {exc}") from None
        _config_cache[path] = (mtime, config)
        return config


def _lookup(alias: str) -> dict[str, Any]:
    config = ssh_config()
    found = dict(config.lookup(alias)) if config is not None else {}
    found.setdefault("hostname", alias)
    return found


_key_lock = threading.Lock()
_key_cache: dict[str, tuple[int, paramiko.PKey]] = {}


def _load_key(path: str) -> paramiko.PKey:
    """A private key file, parsed once per process (all hosts share the operator's key)."""
    mtime = os.stat(path).st_mtime_ns
    with _key_lock:
        cached = _key_cache.get(path)
        if cached and cached[0] == mtime:
            return cached[1]
    key = paramiko.PKey.from_path(path)
    with _key_lock:
        _key_cache[path] = (mtime, key)
    return key


def _ssh_args(target: Target) -> dict[str, str]:
    """The few ssh options deployer understands in ansible_ssh_common_args / _extra_args."""
    found: dict[str, str] = {}
    for var in ("ansible_ssh_common_args", "ansible_ssh_extra_args"):
        raw = target.vars.get(var)
        if not raw:
            continue
        try:
            words = shlex.split(str(raw))
        except ValueError as exc:
            raise Unreachable(f"{var} of {target.name} cannot be split like a shell would: {exc}") from None
        i = 0
        while i < len(words):
            word = words[i]
            value: str | None = None
            if word == "-J" and i + 1 < len(words):
                found.setdefault("proxyjump", words[i + 1])
                i += 2
                continue
            if word.startswith("-J") and len(word) > 2:
                found.setdefault("proxyjump", word[2:])
            elif word == "-o" and i + 1 < len(words):
                value = words[i + 1]
                i += 1
            elif word.startswith("-o") and len(word) > 2:
                value = word[2:]
            if value is not None:
                name, _, rest = value.partition("=") if "=" in value else value.partition(" ")
                found.setdefault(name.strip().lower(), rest.strip())
            i += 1
    return found


def _jump_list(value: str | None) -> list[str]:
    if not value or value.strip().lower() == "none":
        return []
    return [part.strip() for part in value.split(",") if part.strip()]


# --------------------------------------------------------------------------- where to connect


@dataclass
class Hop:
    """One SSH server on the way (a jump host) or at the end (the target)."""

    label: str  # as the user named it: inventory name, alias or jump spec
    hostname: str  # where to connect, after ~/.ssh/config's HostName
    port: int
    user: str
    key_files: list[str]
    jumps: list[str] = field(default_factory=list)
    proxy_command: str | None = None
    host_key_alias: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    user_known_hosts: list[str] = field(default_factory=list)  # the operator's (~/.ssh/config)
    accept_new: bool = False
    inventory_known_hosts: list[str] = field(default_factory=list)  # UserKnownHostsFile in ansible_ssh_*_args
    ignored_strict: bool = False  # the inventory's ssh args asked for StrictHostKeyChecking no/accept-new

    @property
    def address(self) -> str:
        host = f"[{self.hostname}]" if ":" in self.hostname else self.hostname
        return f"{self.user}@{host}:{self.port}"

    @property
    def key_name(self) -> str:
        """This host's name in known_hosts."""
        if self.host_key_alias:
            return self.host_key_alias
        return known_hosts_name(self.hostname, self.port)

    def where(self) -> str:
        return self.address if self.label in (self.hostname, self.address) else f"{self.label}, {self.address}"


def _existing(paths: list[str]) -> list[str]:
    return [p for p in paths if os.path.isfile(p)]


def _timeout(value: Any, default: float = DEFAULT_TIMEOUT) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if number > 0 else default


def resolve_target(target: Target, options: ConnectOptions) -> Hop:
    """The target as a Hop: inventory variables first, then ~/.ssh/config, then defaults."""
    alias = target.address
    config = _lookup(alias)
    args = _ssh_args(target)
    key_var = target.vars.get("ansible_ssh_private_key_file") or target.vars.get("ansible_private_key_file")
    explicit = [os.path.expanduser(str(key_var))] if key_var else []
    for path in explicit:
        if not os.path.isfile(path):
            raise Unreachable(f"the private key {path} (ansible_ssh_private_key_file of {target.name}) does not exist")
    configured = _existing(list(config.get("identityfile", [])))
    keys = explicit + [k for k in configured if k not in explicit]
    if not keys:
        keys = _existing([os.path.expanduser(p) for p in DEFAULT_IDENTITIES])
    jump_var = target.vars.get("deployer_ssh_jump")
    jumps = _jump_list(str(jump_var)) if jump_var else _jump_list(args.get("proxyjump") or config.get("proxyjump"))
    proxy_command = None
    if not jumps:
        raw = args.get("proxycommand") or config.get("proxycommand")
        proxy_command = raw if raw and raw.strip().lower() != "none" else None
    port = target.port or int(args.get("port") or config.get("port") or 22)
    user = target.user or config.get("user") or getpass.getuser()
    hostname = str(config.get("hostname") or alias)
    if proxy_command and "proxycommand" in args:  # ansible's own way: %h %p %r are for us to fill in
        proxy_command = proxy_command.replace("%h", hostname).replace("%p", str(port)).replace("%r", user)
    timeout = _timeout(target.vars.get("ansible_timeout") or target.vars.get("ansible_ssh_timeout")
                       or args.get("connecttimeout") or config.get("connecttimeout"))
    # Host-key checking is the operator's: ~/.ssh/config and the command line. The inventory
    # may add known_hosts files (trust for hosts the operator's files do not know), never
    # replace the operator's or turn checking off (StrictHostKeyChecking=no in its ssh args
    # is ignored: with it, a changed key would look new, and be accepted).
    strict = str(config.get("stricthostkeychecking") or "").lower()
    known = [os.path.expanduser(p) for p in str(config.get("userknownhostsfile") or "").split()]
    from_inventory = [os.path.expanduser(p) for p in str(args.get("userknownhostsfile") or "").split()]
    ignored = str(args.get("stricthostkeychecking") or "").lower() in ("accept-new", "no", "off")
    return Hop(label=target.name, hostname=hostname, port=port, user=user, key_files=keys, jumps=jumps,
               proxy_command=proxy_command, host_key_alias=config.get("hostkeyalias"), timeout=timeout,
               user_known_hosts=known, accept_new=strict in ("accept-new", "no", "off"),
               inventory_known_hosts=from_inventory, ignored_strict=ignored)


def resolve_jump(spec: str, fallback_keys: list[str], timeout: float) -> Hop:
    """A ProxyJump element, with ~/.ssh/config applied to its host like ssh does."""
    try:
        user, host, port = parse_ssh_address(spec)
    except ValueError:
        raise Unreachable(f"cannot read the jump host '{spec}' (expected [user@]host[:port])") from None
    config = _lookup(host)
    keys = _existing(list(config.get("identityfile", []))) or fallback_keys
    known = [os.path.expanduser(p) for p in str(config.get("userknownhostsfile", "")).split()]
    strict = str(config.get("stricthostkeychecking") or "").lower()
    try:
        port = port or int(config.get("port") or 22)
    except ValueError:
        raise Unreachable(f"the jump host '{spec}': Port {config.get('port')} in ~/.ssh/config is not a number") from None
    return Hop(label=spec, hostname=str(config.get("hostname") or host), port=port,
               user=user or config.get("user") or getpass.getuser(), key_files=keys,
               jumps=_jump_list(config.get("proxyjump")), host_key_alias=config.get("hostkeyalias"),
               timeout=_timeout(config.get("connecttimeout"), timeout), user_known_hosts=known,
               accept_new=strict in ("accept-new", "no", "off"))


# --------------------------------------------------------------------------- host keys


class UnknownHostKey(paramiko.SSHException):
    def __init__(self, name: str, key: paramiko.PKey, authorities: list[KnownLine] | None = None) -> None:
        super().__init__(f"unknown host key for {name}")
        self.name, self.key, self.authorities = name, key, authorities or []


class ChangedHostKey(paramiko.SSHException):
    def __init__(self, name: str, key: paramiko.PKey) -> None:
        super().__init__(f"changed host key for {name}")
        self.name, self.key = name, key


class RevokedHostKey(paramiko.SSHException):
    def __init__(self, name: str, key: paramiko.PKey, line: KnownLine) -> None:
        super().__init__(f"revoked host key for {name}")
        self.name, self.key, self.line = name, key, line


@dataclass(frozen=True)
class KnownLine:
    path: str
    line: int
    key_type: str
    fingerprint: str
    blob: str = ""  # the key, base64 as written
    marker: str = ""  # "", "@revoked" or "@cert-authority"
    operator: bool = True  # from the operator's files, not from an inventory variable


def _blob_fingerprint(blob: str) -> str | None:
    try:
        raw = base64.b64decode(blob, validate=True)
    except (ValueError, TypeError):
        return None
    return "SHA256:" + base64.b64encode(hashlib.sha256(raw).digest()).decode().rstrip("=")


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    # OpenSSH's patterns: '*' and '?' are wildcards, everything else literal ('[' included,
    # as in "[host]:2222"), matched without regard to case.
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern), re.IGNORECASE)


def _name_matches(patterns: str, name: str) -> bool:
    """``name`` against a known_hosts host field: comma-separated patterns, '!' negates, or a hashed name."""
    if patterns.startswith("|1|"):
        try:
            return bool(paramiko.HostKeys.hash_host(name, patterns) == patterns)
        except Exception:  # noqa: BLE001 - a malformed hashed entry matches nothing
            return False
    matched = False
    for pattern in patterns.split(","):
        negated = pattern.startswith("!")
        if _pattern_regex(pattern[1:] if negated else pattern).fullmatch(name):
            if negated:
                return False
            matched = True
    return matched


_record_lock = threading.Lock()
MAX_KNOWN_HOSTS = 16 * 1024 * 1024  # a known_hosts file bigger than this is not one


class KnownHosts:
    """The known_hosts files in use: read from all, new keys written to the first.

    ``inventory`` files (``deployer_known_hosts``, ``UserKnownHostsFile`` in
    ``ansible_ssh_common_args``) add trust for hosts; they never replace or override the
    operator's files ($DEPLOYER_KNOWN_HOSTS, ~/.ssh/known_hosts or ~/.ssh/config's
    UserKnownHostsFile, /etc/ssh/ssh_known_hosts): where an operator's file knows a key of a
    type for a host, a key of that type from an inventory file is not trusted for it.
    """

    def __init__(self, files: list[str], inventory: list[str] | None = None) -> None:
        self.inventory = list(dict.fromkeys(inventory or []))
        self.files = list(dict.fromkeys(self.inventory + files))
        self.write_to = self.files[0]

    def entries(self) -> list[tuple[KnownLine, str]]:
        """Every readable line of every file, with its host field (a bad line is skipped, never an error)."""
        found_lines: list[tuple[KnownLine, str]] = []
        for path in self.files:
            try:
                # Not blocking on a FIFO; /dev/null (a common "no file") and any other non-file read as empty.
                with os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as f:
                    if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                        continue
                    text = f.read(MAX_KNOWN_HOSTS).decode("utf-8", errors="replace")
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError as exc:
                raise Unreachable(f"cannot read the known_hosts file {path}: {exc.strerror or exc}") from None
            for number, raw in enumerate(text.split("\n"), 1):
                words = raw.split()
                if not words or words[0].startswith("#"):
                    continue
                marker = words.pop(0) if words[0].startswith("@") else ""
                if len(words) < 3:
                    continue
                hosts, key_type, blob = words[0], words[1], words[2]
                digest = _blob_fingerprint(blob)
                if digest is None:
                    continue
                line = KnownLine(path, number, key_type, digest, blob, marker, operator=path not in self.inventory)
                found_lines.append((line, hosts))
        return found_lines

    def lines_for(self, name: str, marker: str = "") -> list[KnownLine]:
        """Every line of every file that holds a key for ``name`` (plain, wildcard or hashed)."""
        return [line for line, hosts in self.entries() if line.marker == marker and _name_matches(hosts, name)]

    def revoked(self, key: paramiko.PKey) -> KnownLine | None:
        """A ``@revoked`` line for this key, in any file, for any host: a revoked key is never accepted."""
        blob = key.get_base64()
        return next((line for line, _ in self.entries() if line.marker == "@revoked" and line.blob == blob), None)

    def trusted(self, name: str) -> list[KnownLine]:
        """The keys ``name`` may present: the operator's lines, and the inventory's for key types
        the operator's files know nothing of; never a revoked key."""
        lines = self.lines_for(name)
        revoked = {line.blob for line, _ in self.entries() if line.marker == "@revoked"}
        operator_types = {line.key_type for line in lines if line.operator}
        return [line for line in lines if line.blob not in revoked
                and (line.operator or line.key_type not in operator_types)]

    def record(self, name: str, key: paramiko.PKey) -> None:
        """Append ``name key`` to the file in use (accept-new), unless a key got there meanwhile."""
        path = Path(self.write_to)
        with _record_lock:
            if not path.parent.exists():
                path.parent.mkdir(parents=True, mode=0o700)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)  # other deployer processes recording keys at the same time
                present = [k for k in self.lines_for(name) if k.key_type == key.get_name()]
                if any(k.fingerprint == fingerprint(key) for k in present):
                    return
                if present:  # another deployer recorded a different key for it just now
                    raise ChangedHostKey(name, key)
                line = f"{name} {key.get_name()} {key.get_base64()}\n".encode()
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    line = b"\n" + line
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)

    def load_into(self, client: paramiko.SSHClient, name: str) -> None:
        """The keys ``name`` may present, given to paramiko: it prefers their types when
        negotiating, accepts them, and refuses another key of one of their types (changed)."""
        for line in self.trusted(name):
            try:
                key = paramiko.PKey.from_type_string(line.key_type, base64.b64decode(line.blob))
            except Exception:  # noqa: BLE001, S112 - a key type paramiko cannot read: it cannot be presented to us either
                continue
            client.get_host_keys().add(name, line.key_type, key)


class HostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """A key paramiko was not given (see KnownHosts.load_into): revoked, unknown or new.

    paramiko calls this only for a key none of whose type it was given; a different key of
    a type it was given never gets here (SSHClient raises BadHostKeyException first).
    """

    def __init__(self, known: KnownHosts, accept_new: bool) -> None:
        self.known = known
        self.accept_new = accept_new

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        revoked = self.known.revoked(key)
        if revoked is not None:
            raise RevokedHostKey(hostname, key, revoked)
        same_type = [k for k in self.known.lines_for(hostname) if k.key_type == key.get_name()]
        if same_type:  # known, but only from an inventory file the operator's files contradict
            raise ChangedHostKey(hostname, key)
        authorities = self.known.lines_for(hostname, "@cert-authority")
        if authorities or not self.accept_new:
            # deployer (paramiko) cannot check host certificates: a host vouched for by a
            # certificate authority gets a clear refusal, never a key accepted as new instead.
            raise UnknownHostKey(hostname, key, authorities)
        self.known.record(hostname, key)


# --------------------------------------------------------------------------- authentication


class KeyFiles(AuthStrategy):
    """The key files of the hop, in order, then the keys of a running ssh-agent."""

    def __init__(self, user: str, keys: list[paramiko.PKey], agent: paramiko.Agent | None) -> None:
        super().__init__(ssh_config=paramiko.SSHConfig())  # paramiko's base class only keeps it; KeyFiles reads none
        self.user, self.keys, self.agent = user, keys, agent

    def get_sources(self) -> Iterator[AuthSource]:
        for key in self.keys:
            yield InMemoryPrivateKey(self.user, key)
        if self.agent is not None:
            try:
                agent_keys = self.agent.get_keys()
            except Exception:  # noqa: BLE001 - a broken agent is just no agent
                agent_keys = ()
            for agent_key in agent_keys:
                yield InMemoryPrivateKey(self.user, agent_key)


# --------------------------------------------------------------------------- the transport


class SSHTransport:
    name = "ssh"

    def __init__(self, target: Target, become: Become | None = None, options: ConnectOptions | None = None) -> None:
        self.target = target
        self.become = become
        self.options = options or ConnectOptions()
        self.counters = Counters(connections=0)
        try:
            self.hop = resolve_target(target, self.options)
        except ValueError as exc:  # e.g. ansible_port: "ssh"
            raise Unreachable(f"{target.name}: cannot tell how to connect ({exc})",
                              hint="check ansible_port and Port in ~/.ssh/config") from None
        # The operator's files ($DEPLOYER_KNOWN_HOSTS, ~/.ssh/known_hosts or UserKnownHostsFile,
        # the system's), and the inventory's, which only add (see KnownHosts).
        files = [os.path.expanduser(self.options.known_hosts)] if self.options.known_hosts else []
        files += self.hop.user_known_hosts or [os.path.expanduser("~/.ssh/known_hosts")]
        files.append(GLOBAL_KNOWN_HOSTS)
        declared = target.vars.get("deployer_known_hosts")
        inventory = ([os.path.expanduser(str(declared))] if declared else []) + self.hop.inventory_known_hosts
        self.known = KnownHosts(files, inventory)
        self._clients: list[paramiko.SSHClient] = []  # jump hosts first, the target last
        self._client: paramiko.SSHClient | None = None
        self._agent: paramiko.Agent | None = None

    # ------------------------------------------------------------------ connection
    def _ensure(self) -> paramiko.SSHClient:
        if self._client is None:
            self._client = self._connect(self.hop, 0)
        transport = self._client.get_transport()
        if transport is None or not transport.is_active():
            raise Unreachable(f"{self.hop.where()}: the SSH connection was lost")
        return self._client

    def _connect(self, hop: Hop, depth: int) -> paramiko.SSHClient:
        via: paramiko.SSHClient | None = None
        if hop.jumps:
            if depth >= MAX_JUMPS:
                raise Unreachable(f"{self.hop.where()}: more than {MAX_JUMPS} jump hosts (a ProxyJump loop in ~/.ssh/config?)")
            jump = resolve_jump(hop.jumps[-1], self.hop.key_files, self.hop.timeout)
            jump.jumps = hop.jumps[:-1] or jump.jumps
            via = self._connect(jump, depth + 1)
        return self._open(hop, via)

    def _fail(self, hop: Hop, reason: str, hint: str | None = None) -> Unreachable:
        if hop is self.hop:
            return Unreachable(f"{hop.where()}: {reason}", hint=hint)
        return Unreachable(f"{self.hop.where()}: via jump host {hop.where()}: {reason}", hint=hint)

    def _socket(self, hop: Hop, via: paramiko.SSHClient | None) -> Any:
        if via is not None:
            transport = via.get_transport()
            assert transport is not None
            try:
                return transport.open_channel("direct-tcpip", (hop.hostname, hop.port), ("127.0.0.1", 0), timeout=hop.timeout)
            except paramiko.ChannelException as exc:
                raise self._fail(hop, f"the jump host could not connect to it ({exc.text or 'connect failed'})") from None
            except (paramiko.SSHException, EOFError, OSError) as exc:
                raise self._fail(hop, f"the jump host connection failed ({exc or type(exc).__name__})") from None
        if hop.proxy_command:
            try:
                return paramiko.ProxyCommand(hop.proxy_command)
            except Exception as exc:  # noqa: BLE001
                raise self._fail(hop, f"ProxyCommand '{hop.proxy_command}' failed to start: {exc}") from None
        try:
            return socket.create_connection((hop.hostname, hop.port), timeout=hop.timeout)
        except socket.gaierror as exc:
            raise self._fail(hop, f"cannot resolve {hop.hostname} (DNS: {exc.strerror})") from None
        except ConnectionRefusedError:
            raise self._fail(hop, "connection refused (is sshd running and listening on that port?)") from None
        except TimeoutError:
            raise self._fail(hop, f"connection timed out after {hop.timeout:g}s (host down, or a firewall?)") from None
        except OSError as exc:
            raise self._fail(hop, (exc.strerror or str(exc)).lower()) from None

    def _open(self, hop: Hop, via: paramiko.SSHClient | None) -> paramiko.SSHClient:
        loaded: list[tuple[str, paramiko.PKey]] = []
        problems: list[str] = []
        for path in hop.key_files:
            try:
                loaded.append((path, _load_key(path)))
            except paramiko.PasswordRequiredException:
                problems.append(f"{_shown(path)} is protected by a passphrase (load it into ssh-agent)")
            except Exception as exc:  # noqa: BLE001 - unreadable or unknown key type
                problems.append(f"{_shown(path)} cannot be read ({exc or type(exc).__name__})")
        agent = bool(os.environ.get("SSH_AUTH_SOCK"))
        if agent and self._agent is None:
            self._agent = paramiko.Agent()
        if not loaded and not agent:
            detail = "; ".join(problems) or "set ansible_ssh_private_key_file, or IdentityFile in ~/.ssh/config"
            raise self._fail(hop, f"no usable private key for {hop.user}: {detail}")

        client = paramiko.SSHClient()
        self.known.load_into(client, hop.key_name)
        client.set_missing_host_key_policy(HostKeyPolicy(self.known, self.options.accept_new_host_keys or hop.accept_new))
        key_host, key_port = (hop.host_key_alias, 22) if hop.host_key_alias else (hop.hostname, hop.port)
        sock = self._socket(hop, via)
        try:
            client.connect(key_host, port=key_port, username=hop.user, sock=sock, timeout=hop.timeout,
                           banner_timeout=hop.timeout, auth_timeout=hop.timeout, channel_timeout=hop.timeout,
                           auth_strategy=KeyFiles(hop.user, [k for _, k in loaded], self._agent if agent else None))
        except BaseException as exc:
            client.close()
            with contextlib.suppress(Exception):  # the connection's own error is the one to report
                sock.close()
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            raise self._connect_error(hop, exc, loaded, agent, problems) from None
        self.counters.connections += 1
        self._clients.append(client)
        return client

    def _connect_error(self, hop: Hop, exc: BaseException, loaded: list[tuple[str, paramiko.PKey]], agent: bool,
                       problems: list[str]) -> Unreachable:
        if isinstance(exc, RevokedHostKey) or (isinstance(exc, paramiko.BadHostKeyException)
                                                   and self.known.revoked(exc.key) is not None):
            return self._revoked_key(hop, exc.key)
        if isinstance(exc, UnknownHostKey):
            if exc.authorities:
                return self._certified_only(hop, exc.key, exc.authorities)
            return self._unknown_key(hop, exc.key)
        if isinstance(exc, (paramiko.BadHostKeyException, ChangedHostKey)):
            return self._changed_key(hop, exc.key)
        if isinstance(exc, paramiko.AuthenticationException):
            tried = [f"{_shown(p)} ({fingerprint(k)})" for p, k in loaded]
            if agent:
                tried.append("the keys of ssh-agent")
            detail = ", ".join(tried) or "no key"
            extra = f"; {'; '.join(problems)}" if problems else ""
            return self._fail(hop, f"authentication failed for user {hop.user} with {detail}{extra}",
                              hint="is the public key in that user's ~/.ssh/authorized_keys on the host?")
        if isinstance(exc, (socket.timeout, TimeoutError)):
            return self._fail(hop, f"no SSH answer within {hop.timeout:g}s")
        if isinstance(exc, (EOFError, ConnectionResetError)):
            return self._fail(hop, "the connection was closed during the SSH handshake (sshd refused us, or not an SSH server)")
        if isinstance(exc, paramiko.SSHException):
            text = str(exc) or type(exc).__name__
            if "banner" in text.lower():
                return self._fail(hop, "the connection was closed before the SSH banner (sshd down behind a "
                                       "forwarder or proxy, or not an SSH server)")
            return self._fail(hop, f"SSH handshake failed: {text}")
        if isinstance(exc, Unreachable):
            return exc
        if isinstance(exc, OSError):
            return self._fail(hop, f"network error: {(exc.strerror or str(exc)).lower()}")
        return self._fail(hop, f"{type(exc).__name__}: {exc}")

    def _unknown_key(self, hop: Hop, key: paramiko.PKey) -> Unreachable:
        where = _shown(self.known.write_to)
        scan = f"ssh-keyscan -p {hop.port} {hop.hostname} >> {where}"
        if hop is not self.hop or hop.jumps or hop.proxy_command:
            scan = f"run '{scan}' where {hop.hostname} is reachable (e.g. on the jump host) and add its output to {where}"
        else:
            scan = f"'{scan}'"
        return self._fail(
            hop, f"host key not known: {hop.key_name} presents {key.get_name()} {fingerprint(key)}, "
                 f"which is in no known_hosts file ({', '.join(_shown(f) for f in self.known.files)})"
                 + ("; the inventory's StrictHostKeyChecking is not honoured: an inventory cannot turn host-key "
                    "checking down, only the operator can (--accept-new-host-keys)" if hop.ignored_strict else ""),
            hint=f"check that fingerprint with the host's administrator ('ssh-keygen -lf "
                 f"/etc/ssh/ssh_host_{key.get_name().removeprefix('ssh-').split('-')[0]}_key.pub' on the host shows it), "
                 f"then trust it with {scan}, or rerun with --accept-new-host-keys")

    def _revoked_key(self, hop: Hop, key: paramiko.PKey) -> Unreachable:
        line = self.known.revoked(key)
        where = f" ({_shown(line.path)} line {line.line})" if line else ""
        return self._fail(
            hop, f"HOST KEY REVOKED: {hop.key_name} presents {key.get_name()} {fingerprint(key)}, which a @revoked "
                 f"line{where} says must never be accepted. Refusing to connect",
            hint="the host still uses a key its administrators revoked (stolen, or retired): have its key replaced, "
                 "then trust the new one")

    def _certified_only(self, hop: Hop, key: paramiko.PKey, authorities: list[KnownLine]) -> Unreachable:
        lines = ", ".join(f"{_shown(k.path)} line {k.line}" for k in authorities)
        return self._fail(
            hop, f"host key not known: {hop.key_name} presents {key.get_name()} {fingerprint(key)}; known_hosts vouches "
                 f"for it only through a certificate authority (@cert-authority, {lines}), and deployer cannot "
                 "check host certificates. Refusing to connect (--accept-new-host-keys does not apply to it either)",
            hint=f"add the host's own key to a known_hosts file after checking its fingerprint "
                 f"('ssh-keyscan -p {hop.port} {hop.hostname} >> {_shown(self.known.write_to)}')")

    def _changed_key(self, hop: Hop, key: paramiko.PKey) -> Unreachable:
        old = self.known.lines_for(hop.key_name)
        olds = ", ".join(f"{k.key_type} {k.fingerprint} ({_shown(k.path)} line {k.line})" for k in old) or "another key"
        remove = "; ".join(f"ssh-keygen -R '{hop.key_name}' -f {_shown(k.path)}" for k in
                           {k.path: k for k in old}.values())
        lines = ", ".join(f"line {k.line} of {_shown(k.path)}" for k in old)
        return self._fail(
            hop, f"HOST KEY CHANGED for {hop.key_name}: possible man-in-the-middle attack (someone may be "
                 f"intercepting the connection), or the host was reinstalled. It now presents {key.get_name()} "
                 f"{fingerprint(key)}; known_hosts has {olds}. Refusing to connect (--accept-new-host-keys never "
                 f"accepts a changed key)",
            hint=f"if the change is expected, confirm the new fingerprint with the host's administrator, remove the "
                 f"old key ({lines}{': ' + remove if remove else ''}) and trust the new one")

    # ------------------------------------------------------------------ the primitive
    def run(self, argv: list[str], stdin: bytes = b"", timeout: float | None = None,
            on_stdout: Callable[[bytes], None] | None = None) -> Result:
        started = time.monotonic()
        try:
            client = self._ensure()
            full = self._wrap(argv)
            return self._exec(client, full, stdin, timeout, on_stdout)
        finally:
            self.counters.seconds += time.monotonic() - started

    def _wrap(self, argv: list[str]) -> list[str]:
        if self.become is None or self.become.user == self.hop.user:
            return list(argv)
        try:
            return self.become.wrap(list(argv))
        except ValueError as exc:
            raise TargetError(str(exc)) from None

    def _exec(self, client: paramiko.SSHClient, full: list[str], stdin: bytes, timeout: float | None,
              on_stdout: Callable[[bytes], None] | None = None) -> Result:
        transport = client.get_transport()
        assert transport is not None
        channel = self._open_channel(transport, shlex.join(full))
        self.counters.execs += 1
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            channel.close()

        watchdog = threading.Timer(timeout, expire) if timeout else None
        if watchdog is not None:
            watchdog.daemon = True
            watchdog.start()
        try:
            stdout, stderr = _exchange(channel, stdin, on_stdout)
            if not expired.is_set():
                channel.status_event.wait(timeout)
        finally:
            if watchdog is not None:
                watchdog.cancel()
        self.counters.bytes_sent += len(stdin)
        self.counters.bytes_received += len(stdout) + len(stderr)
        if expired.is_set():
            channel.close()
            raise Unreachable(f"{self.hop.where()}: '{' '.join(full[:3])}' did not finish within {timeout:.0f}s")
        if not transport.is_active():
            raise Unreachable(f"{self.hop.where()}: the SSH connection was lost while '{' '.join(full[:3])}' ran")
        code = channel.exit_status if channel.exit_status_ready() else -1
        channel.close()
        if code == -1:
            code = 255  # closed without an exit status: killed by a signal
        if self.become is not None and code == 127 and full[0] == "sudo" and b"sudo" in stderr and b"not found" in stderr:
            raise TargetError(f"sudo is not installed on {self.hop.where()}",
                              hint="ansible_become needs sudo on the target; install it or connect as the run-as user")
        return Result(tuple(full), code, stdout, stderr)

    def _open_channel(self, transport: paramiko.Transport, command: str) -> paramiko.Channel:
        """A session channel on the open connection, running ``command``; a dead connection is Unreachable."""
        try:
            channel = transport.open_session(timeout=self.hop.timeout)
            channel.exec_command(command)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            if "timeout" in str(exc).lower():
                raise Unreachable(f"{self.hop.where()}: no answer within {self.hop.timeout:g}s on the open SSH "
                                  "connection (the host or the network went down?)") from None
            raise Unreachable(f"{self.hop.where()}: the SSH connection failed ({exc or type(exc).__name__})") from None
        return channel

    def close(self) -> None:
        for client in reversed(self._clients):
            with contextlib.suppress(Exception):  # closing never fails a command
                client.close()
        self._clients.clear()
        self._client = None
        if self._agent is not None:
            self._agent.close()
            self._agent = None


def _exchange(channel: paramiko.Channel, stdin: bytes, on_stdout: Callable[[bytes], None] | None) -> tuple[bytes, bytes]:
    """Feed ``stdin`` to a running command and read its output until it closes: stderr in a
    thread of its own (a command that fills one pipe while we wait on the other never hangs),
    and a large stdin too. A channel closed under us (the timeout's watchdog) ends the reads."""
    out: list[bytes] = []
    err: list[bytes] = []

    def read_stderr() -> None:
        try:
            while data := channel.recv_stderr(CHUNK):
                err.append(data)
        except (OSError, EOFError, paramiko.SSHException):
            pass

    def write_stdin() -> None:
        try:
            if stdin:
                channel.sendall(stdin)
            channel.shutdown_write()
        except (OSError, EOFError, paramiko.SSHException):
            pass  # the command ended without reading all of its input; its exit code says why

    helpers = [threading.Thread(target=read_stderr, daemon=True)]
    if len(stdin) > THREADED_STDIN:
        helpers.append(threading.Thread(target=write_stdin, daemon=True))
    for helper in helpers:
        helper.start()
    if len(stdin) <= THREADED_STDIN:
        write_stdin()
    try:
        while data := channel.recv(CHUNK):
            out.append(data)
            if on_stdout is not None:
                on_stdout(data)
    except (OSError, EOFError, paramiko.SSHException):
        pass
    for helper in helpers:
        helper.join()
    return b"".join(out), b"".join(err)
