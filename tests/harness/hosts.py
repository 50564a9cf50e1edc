"""Real Linux test hosts on one machine: network namespaces + overlayfs + sshd + cron.

Stdlib only (Python 3.11), needs root, ``ip`` (iproute2), ``unshare``/``nsenter``/``setpriv``
(util-linux), ``ssh-keygen`` and overlayfs.  The shared Debian rootfs is built once by
``tests/harness/build_rootfs.sh`` (cached in ``/var/cache/deployer-tests/rootfs-bookworm``).

Layout of one harness instance (every name carries a unique prefix such as ``dt3fa1c2``)::

    netns <prefix>-ctl     lo + bridge br0 10.77.0.1/24 + veth vh1..vhN  <- SSH clients run here
    netns <prefix>-h1      lo + eth0 10.77.0.11/24 (peer of vh1)         <- host h1
    netns <prefix>-h2      lo + eth0 10.77.0.12/24 (peer of vh2)         <- host h2 ...

Each host is ``ip netns exec <prefix>-hN unshare --mount --pid --uts --fork --kill-child sh -c
'mount proc/sys, rbind /dev, tmpfs /run; hostname hN; chroot <overlay> sh -c "cron -f -L 15 &
exec sshd -D -f /etc/ssh/sshd_config_test"'``.  Its root is an overlay with two lower layers:
a per-harness *common* layer (users, authorized_keys, sudoers, sshd config, /etc/hosts) on
top of the read-only shared rootfs; per host it adds its own host key and /etc/hostname.
Addresses exist ONLY inside namespaces the harness creates; no interface of the machine
itself is touched.  Because every harness has its own ``ctl`` namespace, two harnesses (even
with the same subnet) never see each other.

How test code reaches the hosts (decision, measured on this machine)
--------------------------------------------------------------------
The host addresses exist only inside ``ctl``; the test process stays in the machine's own
network namespace (entering ``ctl`` with ``setns`` from a thread of the test process is not
safe: the namespace is per thread, and pools/other libraries reuse threads).  Three ways in,
all provided and exercised by ``selftest.py``:

1. **Subprocess inside ctl** (most faithful; use for the ``ssh`` CLI and the ``deployer``
   CLI): ``harness.run_in_ctl([...])`` or prefix argv with ``harness.ctl_argv([...])``
   (= ``ip netns exec <ctl> ...``).  Inside ctl the host *names* resolve too: the harness
   writes ``/etc/netns/<ctl>/hosts``, which ``ip netns exec`` bind-mounts over /etc/hosts.
   ``harness.ssh_config_path`` is an ``ssh -F`` file with key, known_hosts and aliases.
2. **A socket connected inside ctl, handed to the test process** (for in-process paramiko):
   ``sock = harness.connect_socket(host)`` then ``client.connect(host.ip, sock=sock, ...)``.
   A small agent process (``ctl_agent.py``, started once per harness in ctl) connects and
   passes the connected TCP socket back over a unix socket (SCM_RIGHTS).  Network behaviour
   is real: refused when the host is stopped, timeout when its link is down.
3. **Loopback port forwarding** (for code that only accepts host:port, e.g. an inventory
   used by a ``deployer`` process running in the root namespace): every host also gets
   ``127.0.0.1:<free port>`` in the machine's own namespace (``host.forward_port``).  The
   test process binds these listeners itself (so they live in the root netns) and passes
   them to the agent, which accepts on them and connects upstream inside ctl.  known_hosts
   has ``[127.0.0.1]:<port>`` entries.  Limits: a down/stopped host shows up as "connection
   accepted then closed" rather than "refused"/"timeout"; the server sees 10.77.0.1 as client.

Running the whole pytest session inside ctl was rejected: ctl must then exist before pytest
starts (no per-test/per-fixture harness, no parallel harnesses) and gains nothing over (1).

Example::

    from tests.harness.hosts import TestHosts
    with TestHosts(3, users=["alice"], sudo_users=["alice"]) as th:
        h1 = th.hosts[0]
        print(th.ssh(h1, "hostname", user="alice").stdout)          # via ssh CLI in ctl
        print(th.exec_on(h1, ["crontab", "-l", "-u", "alice"]))      # nsenter, no ssh
        th.link_down(h1); th.link_up(h1); th.stop(h1)

Run ``python3 tests/harness/hosts.py cleanup`` to remove leftovers of crashed runs (also done
automatically when a new harness starts), ``python3 tests/harness/hosts.py up 3`` to start
hosts interactively.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_ROOTFS",
    "DEFAULT_STATE_DIR",
    "HarnessError",
    "Host",
    "HostSpec",
    "TestHosts",
    "cleanup_stale",
]

log = logging.getLogger("deployer.tests.harness")

HARNESS_DIR = Path(__file__).resolve().parent
DEFAULT_ROOTFS = Path(os.environ.get("DEPLOYER_TEST_ROOTFS", "/var/cache/deployer-tests/rootfs-bookworm"))
DEFAULT_STATE_DIR = Path("/run/deployer-tests")
BUILD_ROOTFS = HARNESS_DIR / "build_rootfs.sh"
CTL_AGENT = HARNESS_DIR / "ctl_agent.py"
SYS_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BASE_ENV = {"PATH": SYS_PATH, "LANG": "C", "LC_ALL": "C"}
NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
PREFIX_RE = re.compile(r"^[a-z][a-z0-9]{1,11}$")

SSHD_CONFIG = """\
# Written by tests/harness/hosts.py
Port 22
ListenAddress 0.0.0.0
HostKey /etc/ssh/ssh_host_ed25519_key
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
AuthorizedKeysFile .ssh/authorized_keys
StrictModes yes
UseDNS no
PrintMotd no
PidFile /run/sshd.pid
MaxStartups 200:30:400
MaxSessions 100
AcceptEnv LANG LC_*
Subsystem sftp /usr/lib/openssh/sftp-server
LogLevel INFO
"""


class HarnessError(RuntimeError):
    """Raised when the harness cannot start hosts or could not clean up completely."""


@dataclass(frozen=True)
class HostSpec:
    """What to start: a host name (also its hostname) and optionally a fixed address."""

    name: str
    ip: str | None = None


@dataclass
class Host:
    """A running (or stopped) test host.

    ``pid`` is the ``unshare`` process the harness started (its direct child);
    ``init_pid`` is PID 1 of the host's PID namespace (sshd), used for ``nsenter``.
    ``forward_port`` is the loopback port in the machine's own namespace forwarding to
    ``ip:port`` (None without loopback forwarding).
    """

    name: str
    netns: str
    ip: str
    port: int
    veth: str
    dir: Path
    lower: str
    upper: Path
    work: Path
    merged: Path
    host_key: str = ""
    pid: int | None = None
    init_pid: int | None = None
    forward_port: int | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)
    init_starttime: int | None = field(default=None, repr=False)

    @property
    def netns_path(self) -> str:
        """Path of the host's network namespace handle."""
        return f"/run/netns/{self.netns}"

    @property
    def running(self) -> bool:
        """True while the host's PID 1 (sshd) is alive."""
        return self.init_pid is not None and _pid_alive(self.init_pid, self.init_starttime)

    @property
    def console_log(self) -> Path:
        """stdout/stderr of the host's process tree outside the chroot."""
        return self.dir / "console.log"


# --------------------------------------------------------------------------- small helpers


def _run(argv: Sequence[str], *, input: bytes | None = None, check: bool = True,
         timeout: float | None = 60, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run ``argv`` capturing output; raise HarnessError with stderr if ``check`` fails."""
    cp = subprocess.run(list(argv), input=input, capture_output=True, timeout=timeout,
                        env=dict(env or BASE_ENV))
    if check and cp.returncode != 0:
        raise HarnessError(f"{' '.join(argv)!r} failed ({cp.returncode}): "
                           f"{cp.stderr.decode(errors='replace').strip()}")
    return cp


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, starttime) of ``pid`` from /proc, or None if it does not exist."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    rest = data[data.rfind(")") + 2:].split()
    return rest[0], int(rest[19])


def _pid_alive(pid: int, starttime: int | None) -> bool:
    """True if ``pid`` exists, is not a zombie and (if given) has the saved start time."""
    st = _proc_stat(pid)
    if st is None or st[0] in ("Z", "X"):
        return False
    return starttime is None or st[1] == starttime


def _kill_saved(pid: int, starttime: int | None) -> bool:
    """SIGKILL ``pid`` only if it is still the very process we saved. Returns True if sent."""
    if starttime is None or not _pid_alive(pid, starttime):
        return False
    try:
        os.kill(pid, signal.SIGKILL)
        return True
    except ProcessLookupError:
        return False


def _mountpoints() -> set[str]:
    """Mount points of the caller's mount namespace."""
    points: set[str] = set()
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4]
            points.add(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), mp))
    return points


def _umount(path: str) -> None:
    """Unmount ``path`` if mounted (lazily if busy)."""
    if path not in _mountpoints():
        return
    cp = _run(["umount", path], check=False)
    if cp.returncode != 0 and path in _mountpoints():
        _run(["umount", "-l", path])


def _netns_exists(name: str) -> bool:
    return os.path.exists(f"/run/netns/{name}")


def _write(path: Path, data: str | bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    os.chmod(path, mode)


def _resolve_in_root(root: Path, path: str) -> Path:
    """Resolve ``path`` as seen by a process chrooted at ``root`` (symlinks stay inside)."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    resolved: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = root.joinpath(*resolved, part)
        if candidate.is_symlink():
            links += 1
            if links > 40:
                raise OSError(40, "Too many levels of symbolic links", path)
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        resolved.append(part)
    return root.joinpath(*resolved)


# --------------------------------------------------------------------------- state / leftovers


def _state_cleanup(state: Mapping[str, Any]) -> list[str]:
    """Remove everything a harness recorded in its state file. Returns problems found.

    Order: SIGKILL saved PIDs (only if their start time still matches), unmount recorded
    mounts, delete recorded netns, remove /etc/netns/<ctl> and the owned workdir.
    """
    problems: list[str] = []
    for entry in state.get("pids", []):
        pid, starttime = int(entry["pid"]), entry.get("starttime")
        _kill_saved(pid, starttime)
    deadline = time.monotonic() + 5
    for entry in state.get("pids", []):
        pid, starttime = int(entry["pid"]), entry.get("starttime")
        while _pid_alive(pid, starttime) and time.monotonic() < deadline:
            time.sleep(0.005)
        if _pid_alive(pid, starttime):
            problems.append(f"pid {pid} ({entry.get('what')}) still alive")
    for mp in reversed(state.get("mounts", [])):
        try:
            _umount(mp)
        except HarnessError as exc:
            problems.append(str(exc))
    for ns in reversed(state.get("netns", [])):
        if _netns_exists(ns):
            cp = _run(["ip", "netns", "del", ns], check=False)
            if cp.returncode != 0:
                problems.append(f"ip netns del {ns}: {cp.stderr.decode(errors='replace').strip()}")
    etc_dir = state.get("etc_netns_dir")
    if etc_dir and os.path.isdir(etc_dir):
        shutil.rmtree(etc_dir, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.rmdir("/etc/netns")  # only if empty
    workdir = state.get("owned_dir")
    if workdir and os.path.isdir(workdir) and not state.get("keep_dir"):
        mounted = [m for m in _mountpoints() if m == workdir or m.startswith(workdir.rstrip("/") + "/")]
        if mounted:
            problems.append(f"not removing {workdir}: still mounted: {mounted}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return problems


def cleanup_stale(state_dir: Path = DEFAULT_STATE_DIR, prefix: str | None = None) -> list[str]:
    """Clean up harnesses whose owning process is gone (crashed runs).

    Only resources recorded in their state files are touched; PIDs are killed only if their
    start time matches the recorded one. With ``prefix``, only that harness is considered.
    Returns the prefixes cleaned.
    """
    cleaned: list[str] = []
    if not state_dir.is_dir():
        return cleaned
    for path in sorted(state_dir.glob("*.json")):
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if prefix is not None and state.get("prefix") != prefix:
            continue
        owner = state.get("owner", {})
        if _pid_alive(int(owner.get("pid", 0) or 0), owner.get("starttime")):
            continue
        problems = _state_cleanup(state)
        if problems:
            log.warning("stale harness %s: %s", state.get("prefix"), "; ".join(problems))
        else:
            path.unlink(missing_ok=True)
        cleaned.append(str(state.get("prefix")))
    return cleaned


# --------------------------------------------------------------------------- the harness


class TestHosts:
    """N real test hosts (own netns, PID/mount/UTS namespaces, overlay root, sshd, cron).

    Args:
        n: number of hosts (named h1..hN) or a sequence of names / :class:`HostSpec`.
        rootfs: the shared read-only rootfs built by ``build_rootfs.sh``.
        workdir: parent directory for this harness's files (a ``<prefix>`` subdirectory is
            created and removed on close); default: a fresh temporary directory.
        users: accounts created on every host (``useradd -m -p '*'``) with the client key in
            their authorized_keys (root always gets it).
        sudo_users: users allowed ``sudo`` without password (``/etc/sudoers.d``).
        sudo_password_users: ``{user: password}``: users whose sudo asks for this password
            (created too if not in ``users``); SSH login for them is still key-only.
        subnet: private IPv4 /24 (or larger) used only inside the harness's namespaces.
        prefix: name prefix of all namespaces (default random ``dt`` + 6 hex digits).
        loopback_forward: also forward 127.0.0.1:<free port> (machine namespace) to each host.
        build_rootfs: run ``build_rootfs.sh`` if the rootfs is missing (about 45 s).
        die_with_parent: SIGKILL the hosts if the creating thread dies (default: True when
            created in the main thread).
        keep_workdir: keep overlays/logs after close (for debugging).
        start_timeout: seconds to wait for sshd and cron in every host.
    """

    __test__ = False  # keep pytest from collecting this class

    def __init__(
        self,
        n: int | Sequence[str | HostSpec] = 3,
        *,
        rootfs: str | os.PathLike[str] = DEFAULT_ROOTFS,
        workdir: str | os.PathLike[str] | None = None,
        users: Iterable[str] = (),
        sudo_users: Iterable[str] = (),
        sudo_password_users: Mapping[str, str] | None = None,
        subnet: str = "10.77.0.0/24",
        prefix: str | None = None,
        loopback_forward: bool = True,
        build_rootfs: bool = False,
        die_with_parent: bool | None = None,
        keep_workdir: bool = False,
        start_timeout: float = 15.0,
        state_dir: str | os.PathLike[str] = DEFAULT_STATE_DIR,
    ) -> None:
        specs = [HostSpec(f"h{i}") for i in range(1, n + 1)] if isinstance(n, int) else [
            s if isinstance(s, HostSpec) else HostSpec(str(s)) for s in n]
        if not specs:
            raise ValueError("need at least one host")
        names = [s.name for s in specs]
        if len(set(names)) != len(names) or not all(NAME_RE.match(x) for x in names):
            raise ValueError(f"host names must be unique and match {NAME_RE.pattern}: {names}")
        self.specs = specs
        self.rootfs = Path(rootfs)
        self.sudo_password_users = dict(sudo_password_users or {})
        self.users = list(dict.fromkeys([*users, *self.sudo_password_users]))
        self.sudo_users = list(sudo_users)
        for u in self.users + self.sudo_users:
            if not NAME_RE.match(u) or u == "root":
                raise ValueError(f"bad user name {u!r}")
        unknown = set(self.sudo_users) - set(self.users)
        if unknown:
            raise ValueError(f"sudo_users not in users: {sorted(unknown)}")
        self.network = ipaddress.ip_network(subnet)
        self.gateway = str(self.network.network_address + 1)
        self.prefix = prefix or "dt" + secrets.token_hex(3)
        if not PREFIX_RE.match(self.prefix):
            raise ValueError(f"prefix must match {PREFIX_RE.pattern}")
        self.ctl_netns = f"{self.prefix}-ctl"
        self.loopback_forward = loopback_forward
        self.build_rootfs = build_rootfs
        self.die_with_parent = (threading.current_thread() is threading.main_thread()
                                if die_with_parent is None else die_with_parent)
        self.keep_workdir = keep_workdir
        self.start_timeout = start_timeout
        self.state_dir = Path(state_dir)
        self.state_path = self.state_dir / f"{self.prefix}.json"
        self._workdir_parent = Path(workdir) if workdir is not None else None
        self.dir = Path("/nonexistent")
        self.hosts: list[Host] = []
        self.timings: dict[str, float] = {}
        self._state: dict[str, Any] = {}
        self._agent: subprocess.Popen[bytes] | None = None
        self._agent_starttime: int | None = None
        self._ctl_sock: socket.socket | None = None
        self._ctl_lock = threading.Lock()
        self._started = False
        self._closed = False

    # ------------------------------------------------------------------ paths
    @property
    def ctl_netns_path(self) -> str:
        """``/run/netns/<ctl>``: the namespace in which host addresses are reachable."""
        return f"/run/netns/{self.ctl_netns}"

    @property
    def client_key_path(self) -> Path:
        """Private ed25519 key authorized for root and every user on every host."""
        return self.dir / "client" / "id_ed25519"

    @property
    def known_hosts_path(self) -> Path:
        """known_hosts with every host as ``name,ip`` and ``[127.0.0.1]:<forward_port>``."""
        return self.dir / "client" / "known_hosts"

    @property
    def ssh_config_path(self) -> Path:
        """``ssh -F`` config: per host ``Host <name>`` (ip, use inside ctl) and
        ``Host <name>.lo`` (loopback forward), key + known_hosts, BatchMode, strict checking."""
        return self.dir / "client" / "ssh_config"

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> TestHosts:
        return self.start()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            self.close()
        except HarnessError:
            if exc_type is None:
                raise
            log.exception("harness cleanup failed while handling another exception")

    def _save_state(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._state, indent=1))
        os.replace(tmp, self.state_path)

    def _record(self, key: str, value: Any) -> None:
        self._state.setdefault(key, []).append(value)
        self._save_state()

    def start(self) -> TestHosts:
        """Create namespaces, overlays and processes; wait until sshd and cron are up."""
        if self._started:
            raise HarnessError("already started")
        self._started = True
        if os.geteuid() != 0:
            raise HarnessError("TestHosts needs root")
        t0 = time.monotonic()
        cleanup_stale(self.state_dir)
        if _netns_exists(self.ctl_netns) or self.state_path.exists():
            raise HarnessError(f"prefix {self.prefix} is in use by a live harness")
        atexit.register(self._atexit)
        try:
            self._start()
        except BaseException:
            try:
                self.close()
            except Exception:  # report the original error
                log.exception("cleanup after failed start")
            raise
        self.timings["up"] = time.monotonic() - t0
        return self

    def _start(self) -> None:
        if not (self.rootfs / ".complete").exists():
            if not self.build_rootfs:
                raise HarnessError(f"rootfs {self.rootfs} missing: run {BUILD_ROOTFS} {self.rootfs}")
            subprocess.run(["sh", str(BUILD_ROOTFS), str(self.rootfs)], check=True)
        me = os.getpid()
        if self._workdir_parent is None:
            self.dir = Path(tempfile.mkdtemp(prefix=f"deployer-hosts-{self.prefix}-"))
        else:
            self.dir = self._workdir_parent / self.prefix
            self.dir.mkdir(parents=True)
        self._state = {
            "prefix": self.prefix,
            "owner": {"pid": me, "starttime": (_proc_stat(me) or ("", None))[1]},
            "owned_dir": str(self.dir),
            "keep_dir": self.keep_workdir,
            "etc_netns_dir": None,
            "pids": [], "mounts": [], "netns": [],
        }
        self._save_state()

        # Host records and addresses.
        used = {self.gateway}
        auto = (str(a) for a in self.network.hosts() if int(a) - int(self.network.network_address) > 10)
        for i, spec in enumerate(self.specs, 1):
            ip = spec.ip or next(a for a in auto if a not in used)
            if ipaddress.ip_address(ip) not in self.network or ip in used:
                raise ValueError(f"bad or duplicate address {ip} for {spec.name}")
            used.add(ip)
            hdir = self.dir / "hosts" / spec.name
            self.hosts.append(Host(
                name=spec.name, netns=f"{self.prefix}-{spec.name}", ip=ip, port=22, veth=f"vh{i}",
                dir=hdir, lower="", upper=hdir / "upper", work=hdir / "work", merged=hdir / "merged"))

        # Keys: client key once per harness, one host key per host (in parallel).
        t = time.monotonic()
        self.client_key_path.parent.mkdir(parents=True)
        keygens = [subprocess.Popen(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C",
                                     f"deployer-tests@{self.prefix}", "-f", str(self.client_key_path)],
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=BASE_ENV)]
        for h in self.hosts:
            (h.dir / "hostkey").mkdir(parents=True)
            keygens.append(subprocess.Popen(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{h.name}",
                 "-f", str(h.dir / "hostkey" / "ssh_host_ed25519_key")],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=BASE_ENV))
        for p in keygens:
            if p.wait() != 0:
                raise HarnessError("ssh-keygen failed")
        for h in self.hosts:
            h.host_key = " ".join((h.dir / "hostkey" / "ssh_host_ed25519_key.pub").read_text().split()[:2])
        self.timings["keys"] = time.monotonic() - t

        t = time.monotonic()
        self._setup_network()
        self.timings["network"] = time.monotonic() - t
        t = time.monotonic()
        self._build_common_layer()
        self.timings["common_layer"] = time.monotonic() - t
        t = time.monotonic()
        for h in self.hosts:
            self._mount_host(h)
        self.timings["overlays"] = time.monotonic() - t
        t = time.monotonic()
        self._start_agent()
        for h in self.hosts:
            self._launch(h)
        self._wait_ready(self.hosts)
        self._ping_agent()
        self.timings["processes"] = time.monotonic() - t
        self._write_client_files()

    def _setup_network(self) -> None:
        for ns in [self.ctl_netns, *(h.netns for h in self.hosts)]:
            if _netns_exists(ns):
                raise HarnessError(f"netns {ns} already exists")
            self._record("netns", ns)
        _run(["ip", "-b", "-"], input="".join(
            f"netns add {ns}\n" for ns in self._state["netns"]).encode())
        ctl = [
            "link set lo up",
            "link add br0 type bridge forward_delay 0",
            f"addr add {self.gateway}/{self.network.prefixlen} dev br0",
            "link set br0 up",
        ]
        for h in self.hosts:
            ctl += [f"link add {h.veth} type veth peer name eth0 netns {h.netns}",
                    f"link set {h.veth} master br0", f"link set {h.veth} up"]
        _run(["ip", "-n", self.ctl_netns, "-b", "-"], input="\n".join(ctl).encode() + b"\n")
        for h in self.hosts:
            _run(["ip", "-n", h.netns, "-b", "-"], input=(
                "link set lo up\n"
                f"addr add {h.ip}/{self.network.prefixlen} dev eth0\n"
                "link set eth0 up\n"
                f"route add default via {self.gateway}\n").encode())
        etc = Path("/etc/netns") / self.ctl_netns
        self._state["etc_netns_dir"] = str(etc)
        self._save_state()
        lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback",
                 f"{self.gateway}\tctl"] + [f"{h.ip}\t{h.name}" for h in self.hosts]
        _write(etc / "hosts", "\n".join(lines) + "\n")

    def _build_common_layer(self) -> None:
        """Users, keys, sudoers, sshd config and /etc/hosts, shared by all hosts."""
        base = self.dir / "common"
        upper, work, merged = base / "upper", base / "work", base / "merged"
        for d in (upper, work, merged):
            d.mkdir(parents=True)
        self._record("mounts", str(merged))
        _run(["mount", "-t", "overlay", "overlay", "-o",
              f"lowerdir={self.rootfs},upperdir={upper},workdir={work}", str(merged)])
        try:
            pub = (self.client_key_path.with_suffix(".pub")).read_text()
            _write(merged / "etc/ssh/sshd_config_test", SSHD_CONFIG)
            hosts = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback",
                     f"{self.gateway}\tctl"] + [f"{h.ip}\t{h.name}" for h in self.hosts]
            _write(merged / "etc/hosts", "\n".join(hosts) + "\n")
            script = ["set -e", "install -d -m 700 /root/.ssh",
                      "cat /tmp/.client.pub > /root/.ssh/authorized_keys",
                      "chmod 600 /root/.ssh/authorized_keys"]
            for u in self.users:
                script += [f"useradd -m -s /bin/bash -p '*' {u}",
                           f"install -d -m 700 -o {u} -g {u} /home/{u}/.ssh",
                           f"install -m 600 -o {u} -g {u} /tmp/.client.pub /home/{u}/.ssh/authorized_keys"]
            if self.sudo_password_users:
                script.append("chpasswd < /tmp/.passwords")
            script.append("rm -f /tmp/.client.pub /tmp/.passwords")
            _write(merged / "tmp/.client.pub", pub, 0o644)
            if self.sudo_password_users:
                _write(merged / "tmp/.passwords",
                       "".join(f"{u}:{p}\n" for u, p in self.sudo_password_users.items()), 0o600)
            sudoers = [f"{u} ALL=(ALL:ALL) NOPASSWD: ALL" for u in self.sudo_users]
            sudoers += [f"{u} ALL=(ALL:ALL) ALL" for u in self.sudo_password_users
                        if u not in self.sudo_users]
            if sudoers:
                _write(merged / "etc/sudoers.d/deployer-tests", "\n".join(sudoers) + "\n", 0o440)
            _run(["chroot", str(merged), "/bin/sh", "-c", "\n".join(script)])
        finally:
            _umount(str(merged))
        shutil.rmtree(work, ignore_errors=True)

    def _mount_host(self, h: Host) -> None:
        for d in (h.upper, h.work, h.merged):
            d.mkdir(parents=True)
        h.lower = f"{self.dir / 'common' / 'upper'}:{self.rootfs}"
        self._record("mounts", str(h.merged))
        _run(["mount", "-t", "overlay", "overlay", "-o",
              f"lowerdir={h.lower},upperdir={h.upper},workdir={h.work}", str(h.merged)])
        _write(h.merged / "etc/hostname", h.name + "\n")
        keydir = h.dir / "hostkey"
        _write(h.merged / "etc/ssh/ssh_host_ed25519_key",
               (keydir / "ssh_host_ed25519_key").read_bytes(), 0o600)
        _write(h.merged / "etc/ssh/ssh_host_ed25519_key.pub",
               (keydir / "ssh_host_ed25519_key.pub").read_bytes(), 0o644)

    def _launch(self, h: Host) -> None:
        """Start the host's process tree; records PIDs (ready-wait is separate)."""
        m = str(h.merged)
        inner = ("cron -f -L 15 </dev/null >>/var/log/cron.console 2>&1 & "
                 "exec /usr/sbin/sshd -D -f /etc/ssh/sshd_config_test -E /var/log/sshd.log")
        script = "\n".join([
            "set -e",
            f"M='{m}'",
            'mount -t proc proc "$M/proc"',
            'mount -t sysfs sysfs "$M/sys" 2>/dev/null || true',
            'mount --rbind /dev "$M/dev"',
            'mount -t tmpfs -o mode=755,size=64m tmpfs "$M/run"',
            'mkdir -p -m 755 "$M/run/sshd" "$M/run/lock"',
            f"hostname {h.name}",
            f'exec chroot "$M" /bin/sh -c \'{inner}\'',
        ])
        argv = ["ip", "netns", "exec", h.netns, "unshare", "--mount", "--pid", "--uts",
                "--fork", "--kill-child", "--", "sh", "-c", script]
        if self.die_with_parent:
            argv = ["setpriv", "--pdeathsig", "KILL", "--", *argv]
        with open(h.console_log, "ab") as console:
            h.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=console,
                                      stderr=subprocess.STDOUT, env=BASE_ENV)
        h.pid = h.proc.pid
        self._record("pids", {"pid": h.pid, "starttime": (_proc_stat(h.pid) or ("", None))[1],
                              "what": f"{h.name} unshare"})
        h.init_pid = None

    def _find_init(self, h: Host) -> None:
        assert h.pid is not None
        try:
            children = Path(f"/proc/{h.pid}/task/{h.pid}/children").read_text().split()
        except FileNotFoundError:
            return
        if children:
            h.init_pid = int(children[0])
            st = _proc_stat(h.init_pid)
            h.init_starttime = st[1] if st else None
            self._record("pids", {"pid": h.init_pid, "starttime": h.init_starttime,
                                  "what": f"{h.name} init"})

    @staticmethod
    def _listening(h: Host) -> bool:
        assert h.init_pid is not None
        want = f":{h.port:04X}"
        for fam in ("tcp", "tcp6"):
            try:
                lines = Path(f"/proc/{h.init_pid}/net/{fam}").read_text().splitlines()[1:]
            except FileNotFoundError:
                return False
            for line in lines:
                cols = line.split()
                if cols[1].endswith(want) and cols[3] == "0A":
                    return True
        return False

    def _wait_ready(self, hosts: Sequence[Host]) -> None:
        """Wait until every host's sshd listens and cron wrote its pid file."""
        deadline = time.monotonic() + self.start_timeout
        pending = list(hosts)
        while pending:
            for h in list(pending):
                assert h.proc is not None
                if h.proc.poll() is not None:
                    raise HarnessError(f"host {h.name} exited ({h.proc.returncode}): {self._logs(h)}")
                if h.init_pid is None:
                    self._find_init(h)
                if h.init_pid is None:
                    continue
                cron_pid = Path(f"/proc/{h.init_pid}/root/run/crond.pid")
                if self._listening(h) and cron_pid.exists():
                    pending.remove(h)
            if pending:
                if time.monotonic() > deadline:
                    logs = {h.name: self._logs(h) for h in pending}
                    raise HarnessError(f"hosts not ready after {self.start_timeout}s: {logs}")
                time.sleep(0.005)

    def _logs(self, h: Host) -> str:
        """Tails of the host's console log and its sshd/cron logs (for error messages)."""
        parts = []
        for label, path in (("console", h.console_log), ("sshd.log", h.upper / "var/log/sshd.log"),
                            ("cron.console", h.upper / "var/log/cron.console")):
            try:
                text = path.read_text(errors="replace").strip()
            except OSError:
                continue
            if text:
                parts.append(f"[{label}] {text[-1000:]}")
        return " ".join(parts) or "(no output)"

    # ------------------------------------------------------------------ ctl agent
    def _start_agent(self) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        listeners: list[socket.socket] = []
        forwards: list[list[Any]] = []
        if self.loopback_forward:
            for h in self.hosts:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.bind(("127.0.0.1", 0))
                s.listen(128)
                h.forward_port = s.getsockname()[1]
                listeners.append(s)
                forwards.append([s.fileno(), h.ip, h.port])
        config = {"control": child.fileno(), "forwards": forwards, "connect_timeout": 10}
        argv = ["ip", "netns", "exec", self.ctl_netns, sys.executable, "-I", "-S", str(CTL_AGENT),
                json.dumps(config)]
        if self.die_with_parent:
            argv = ["setpriv", "--pdeathsig", "KILL", "--", *argv]
        try:
            with open(self.dir / "ctl_agent.log", "ab") as logf:
                self._agent = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                    env=BASE_ENV, pass_fds=[child.fileno(), *(s.fileno() for s in listeners)])
        finally:
            child.close()
            for s in listeners:
                s.close()
        self._ctl_sock = parent
        st = _proc_stat(self._agent.pid)
        self._agent_starttime = st[1] if st else None
        self._record("pids", {"pid": self._agent.pid, "starttime": self._agent_starttime,
                              "what": "ctl agent"})

    def _agent_request(self, req: Mapping[str, Any], timeout: float) -> tuple[dict[str, Any], list[int]]:
        if self._ctl_sock is None:
            raise HarnessError("ctl agent not running")
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            with self._ctl_lock:
                socket.send_fds(self._ctl_sock, [b"c"], [theirs.fileno()])
            theirs.close()
            mine.send(json.dumps(req).encode())
            mine.settimeout(timeout)
            msg, fds, _flags, _addr = socket.recv_fds(mine, 65536, 1)
        finally:
            mine.close()
            theirs.close()
        if not msg:
            raise HarnessError("ctl agent closed the request (is it still running?)")
        return json.loads(msg), fds

    def _ping_agent(self) -> None:
        resp, _ = self._agent_request({"ping": True}, timeout=5)
        if not resp.get("ok"):
            raise HarnessError(f"ctl agent: {resp}")

    def connect_socket(self, host: Host | str, port: int | None = None, timeout: float = 10.0) -> socket.socket:
        """Return a TCP socket connected to ``host:port`` from inside ctl (blocking mode).

        Use with paramiko: ``client.connect(h.ip, port=22, sock=th.connect_socket(h), ...)``.
        Raises ConnectionRefusedError, TimeoutError, OSError like a normal connect would.
        """
        h = self.host(host)
        resp, fds = self._agent_request({"ip": h.ip, "port": port or h.port, "timeout": timeout},
                                        timeout=timeout + 5)
        if not resp.get("ok"):
            for fd in fds:
                os.close(fd)
            if resp.get("errno") is None:
                raise TimeoutError(f"connect to {h.name} ({h.ip}) timed out")
            raise OSError(resp["errno"], f"{resp.get('error')} ({h.name} {h.ip}:{port or h.port})")
        return socket.socket(fileno=fds[0])

    def loopback_address(self, host: Host | str) -> tuple[str, int]:
        """``("127.0.0.1", port)`` forwarding to the host's sshd (machine namespace)."""
        h = self.host(host)
        if h.forward_port is None:
            raise HarnessError("loopback forwarding is disabled")
        return "127.0.0.1", h.forward_port

    # ------------------------------------------------------------------ client files
    def _write_client_files(self) -> None:
        kh = []
        for h in self.hosts:
            kh.append(f"{h.name},{h.ip} {h.host_key}")
            if h.forward_port:
                kh.append(f"[127.0.0.1]:{h.forward_port} {h.host_key}")
        _write(self.known_hosts_path, "\n".join(kh) + "\n", 0o644)
        cfg = []
        for h in self.hosts:
            cfg += [f"Host {h.name} {h.ip}", f"  HostName {h.ip}", f"  Port {h.port}", ""]
            if h.forward_port:
                cfg += [f"Host {h.name}.lo", "  HostName 127.0.0.1", f"  Port {h.forward_port}", ""]
        cfg += ["Host *", f"  IdentityFile {self.client_key_path}", "  IdentitiesOnly yes",
                f"  UserKnownHostsFile {self.known_hosts_path}", "  GlobalKnownHostsFile /dev/null",
                "  StrictHostKeyChecking yes", "  BatchMode yes", "  ConnectTimeout 5",
                "  LogLevel ERROR", ""]
        _write(self.ssh_config_path, "\n".join(cfg), 0o644)

    # ------------------------------------------------------------------ access
    def host(self, host: Host | str) -> Host:
        """The :class:`Host` for a name (or the Host itself)."""
        if isinstance(host, Host):
            return host
        for h in self.hosts:
            if h.name == host:
                return h
        raise KeyError(host)

    def ctl_argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` prefixed to run inside the ctl netns (for Popen/subprocess.run)."""
        return ["ip", "netns", "exec", self.ctl_netns, *argv]

    def run_in_ctl(self, argv: Sequence[str], *, input: bytes | str | None = None,
                   check: bool = False, timeout: float | None = 60,
                   env: Mapping[str, str] | None = None, text: bool = True) -> subprocess.CompletedProcess[Any]:
        """Run ``argv`` inside the ctl netns (where host addresses and names resolve)."""
        return subprocess.run(self.ctl_argv(argv), input=input, capture_output=True, check=check,
                              timeout=timeout, text=text, env=dict(env) if env is not None else None)

    def ssh_argv(self, host: Host | str, command: str | Sequence[str] | None = None, *,
                 user: str = "root", via: str = "ctl", options: Sequence[str] = ()) -> list[str]:
        """argv of an ``ssh`` CLI call to ``host`` using the harness's config, key and known_hosts.

        ``via="ctl"`` (default) runs ssh inside ctl and connects to the host address;
        ``via="loopback"`` runs ssh in the machine namespace against the loopback forward.
        """
        h = self.host(host)
        target = h.name if via == "ctl" else f"{h.name}.lo"
        argv = ["ssh", "-F", str(self.ssh_config_path), *options, "-l", user, target]
        if command is not None:
            argv += ["--", command] if isinstance(command, str) else ["--", *command]
        return self.ctl_argv(argv) if via == "ctl" else argv

    def ssh(self, host: Host | str, command: str | Sequence[str], *, user: str = "root",
            input: str | None = None, via: str = "ctl", timeout: float = 60,
            check: bool = False) -> subprocess.CompletedProcess[str]:
        """Run ``command`` on ``host`` over real SSH with the ``ssh`` CLI (text mode)."""
        return subprocess.run(self.ssh_argv(host, command, user=user, via=via), input=input,
                              capture_output=True, text=True, timeout=timeout, check=check)

    def exec_on(self, host: Host | str, argv: Sequence[str], *, user: str | None = None,
                input: bytes | str | None = None, check: bool = False, timeout: float | None = 60,
                env: Mapping[str, str] | None = None, text: bool = True) -> subprocess.CompletedProcess[Any]:
        """Run ``argv`` inside ``host`` (all its namespaces and its root) with ``nsenter``.

        No SSH involved. With ``user``, runs as that user via ``runuser -u USER --``.
        """
        h = self.host(host)
        if not h.running or h.init_pid is None:
            raise HarnessError(f"host {h.name} is not running")
        cmd = list(argv)
        if user is not None and user != "root":
            cmd = ["runuser", "-u", user, "--", *cmd]
        full_env = {**BASE_ENV, "HOME": "/root" if user in (None, "root") else f"/home/{user}",
                    "USER": user or "root", "LOGNAME": user or "root", **(env or {})}
        return subprocess.run(
            ["nsenter", "--target", str(h.init_pid), "--mount", "--uts", "--pid", "--net",
             "--root", "--wd", "--", *cmd],
            input=input, capture_output=True, check=check, timeout=timeout, text=text, env=full_env)

    def read_file(self, host: Host | str, path: str, *, layer: str = "merged") -> bytes:
        """Read ``path`` as the host sees it on disk (``layer="merged"``), or only the host's
        own changes (``layer="upper"``: FileNotFoundError if the host never wrote it).
        Works after :meth:`stop` too (not for the host's tmpfs /run)."""
        h = self.host(host)
        root = h.merged if layer == "merged" else h.upper
        if layer not in ("merged", "upper"):
            raise ValueError(layer)
        return _resolve_in_root(root, path).read_bytes()

    def read_text(self, host: Host | str, path: str, *, layer: str = "merged") -> str:
        """:meth:`read_file` decoded as UTF-8."""
        return self.read_file(host, path, layer=layer).decode()

    # ------------------------------------------------------------------ faults
    def stop(self, host: Host | str) -> None:
        """Kill the host (SIGKILL to its saved PIDs); its disk (overlay) stays readable."""
        h = self.host(host)
        self._kill_host(h)

    def restart(self, host: Host | str) -> None:
        """Start a stopped host again on the same overlay (state persists, /run is fresh)."""
        h = self.host(host)
        if h.running:
            raise HarnessError(f"host {h.name} is running")
        self._kill_host(h)
        self._launch(h)
        self._wait_ready([h])

    def _kill_host(self, h: Host) -> None:
        if h.init_pid is not None:
            _kill_saved(h.init_pid, h.init_starttime)
        if h.proc is not None:
            try:
                h.proc.wait(timeout=2)  # unshare exits once its child is dead
            except subprocess.TimeoutExpired:
                h.proc.kill()
                h.proc.wait(timeout=5)
        deadline = time.monotonic() + 5
        while h.init_pid is not None and _pid_alive(h.init_pid, h.init_starttime):
            if time.monotonic() > deadline:
                raise HarnessError(f"host {h.name} PID {h.init_pid} did not die")
            time.sleep(0.005)

    def link_down(self, host: Host | str) -> None:
        """Take the host's link down (its bridge-side veth in ctl): packets are dropped."""
        h = self.host(host)
        _run(["ip", "-n", self.ctl_netns, "link", "set", h.veth, "down"])

    def link_up(self, host: Host | str) -> None:
        """Bring the host's link back up."""
        h = self.host(host)
        _run(["ip", "-n", self.ctl_netns, "link", "set", h.veth, "up"])

    # ------------------------------------------------------------------ teardown
    def _atexit(self) -> None:
        try:
            self.close()
        except Exception:
            log.exception("harness cleanup at exit failed")

    def close(self) -> None:
        """Tear everything down. Safe to call twice. Raises HarnessError if something stayed."""
        if self._closed or not self._started:
            return
        self._closed = True
        t0 = time.monotonic()
        problems: list[str] = []
        if self._ctl_sock is not None:
            self._ctl_sock.close()  # the agent exits on EOF
            self._ctl_sock = None
        for h in self.hosts:
            try:
                self._kill_host(h)
            except Exception as exc:  # noqa: BLE001
                problems.append(f"{h.name}: {exc}")
        if self._agent is not None:
            try:
                self._agent.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self._agent.kill()
                self._agent.wait(timeout=5)
        if self._state:
            problems += _state_cleanup(self._state)
        if not problems:
            self.state_path.unlink(missing_ok=True)
        atexit.unregister(self._atexit)
        self.timings["down"] = time.monotonic() - t0
        if problems:
            raise HarnessError("incomplete cleanup: " + "; ".join(problems))

    def leftovers(self) -> list[str]:
        """Anything of this harness still present (netns, mounts, live PIDs, files)."""
        left: list[str] = []
        left += [f"netns {ns}" for ns in self._state.get("netns", []) if _netns_exists(ns)]
        mps = _mountpoints()
        left += [f"mount {mp}" for mp in self._state.get("mounts", []) if mp in mps]
        left += [f"mount {mp}" for mp in mps if mp.startswith(str(self.dir) + "/")]
        left += [f"pid {p['pid']} ({p.get('what')})" for p in self._state.get("pids", [])
                 if _pid_alive(int(p["pid"]), p.get("starttime"))]
        if self._state.get("etc_netns_dir") and os.path.exists(self._state["etc_netns_dir"]):
            left.append(self._state["etc_netns_dir"])
        if self.state_path.exists():
            left.append(str(self.state_path))
        if not self.keep_workdir and self.dir.exists():
            left.append(str(self.dir))
        return left


# --------------------------------------------------------------------------- CLI


def _main(argv: list[str]) -> int:
    """``hosts.py cleanup`` | ``hosts.py up [N] [user ...]`` (Ctrl-C to stop)."""
    logging.basicConfig(level=logging.INFO)
    if len(argv) >= 2 and argv[1] == "cleanup":
        print("cleaned:", cleanup_stale() or "nothing")
        return 0
    if len(argv) >= 2 and argv[1] == "up":
        n = int(argv[2]) if len(argv) > 2 else 3
        with TestHosts(n, users=argv[3:], sudo_users=argv[3:]) as th:
            print(f"ctl netns: {th.ctl_netns}   workdir: {th.dir}   timings: {th.timings}")
            for h in th.hosts:
                print(f"{h.name} {h.ip}  loopback 127.0.0.1:{h.forward_port}  init pid {h.init_pid}")
                print("   ", " ".join(th.ssh_argv(h, None)))
            with contextlib.suppress(KeyboardInterrupt):
                signal.pause()
        return 0
    print(_main.__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv))
