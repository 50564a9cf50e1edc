"""A real Incus daemon for the tests, set up from scratch on this machine; stdlib only.

Everything is idempotent and safe to run again, or from several test sessions at once
(steps that change the machine are serialized with a lock file):

1. :func:`ensure_installed`: the ``incus-base`` package (container-only daemon + client)
   from bookworm-backports; the backports apt source is added first if no source has it.
2. :class:`IncusDaemon`: starts ``incusd --group incus-admin`` by hand (no systemd here)
   unless one already answers on its socket, and waits for it. It is stopped by
   :meth:`IncusDaemon.stop` only if this process started it (PID and start time saved in
   ``/run/deployer-tests/incus/incusd.json``); a daemon left by a crashed test session is
   adopted by the next one.
3. :func:`ensure_initialised`: a ``dir`` storage pool and a root disk in the default
   profile, with a preseed. NO managed network, ever: a managed bridge would put an
   address on the machine's own interfaces. Containers have no network (cron does not
   need one).
4. :func:`ensure_image`: ``incus_image.sh`` tars the cached debootstrap rootfs with an
   ``/sbin/init`` that starts cron; imported as ``deployer-test`` (re-imported only when
   the rootfs or the script changed).
5. :meth:`Incus.launch` / :meth:`Incus.delete`: containers (~2 s each) named ``dt-<hex>``
   and tagged ``user.deployer-tests.owner=<pid>:<start time>``, so that
   :func:`cleanup_stale` deletes those of crashed sessions and nothing else.

:class:`LoopbackSshd` is a throwaway sshd on 127.0.0.1:<free port> (own config, host key,
authorized key, known_hosts), for driving this machine's Incus over SSH.

``python3 tests/harness/incus.py up|down|cleanup|bench``: by hand, see ``main``.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
INCUSD = "/usr/libexec/incus/incusd"
INCUS_SOCKET = Path("/var/lib/incus/unix.socket")
PACKAGE = "incus-base"  # the daemon without VM support (VMs cannot run here: no vhost_vsock)
BACKPORTS = "bookworm-backports"
BACKPORTS_SOURCE = Path("/etc/apt/sources.list.d/bookworm-backports.sources")
STATE_DIR = Path("/run/deployer-tests/incus")  # a subdirectory: hosts.py owns /run/deployer-tests/*.json
IMAGE_ALIAS = "deployer-test"
IMAGE_DIR = Path("/var/cache/deployer-tests/incus-image")
ROOTFS = Path("/var/cache/deployer-tests/rootfs-bookworm")
POOL = "deployer-test"
OWNER_KEY = "user.deployer-tests.owner"
NAME_PREFIX = "dt-"


class IncusError(RuntimeError):
    pass


# --------------------------------------------------------------------------- small helpers


def starttime(pid: int) -> str | None:
    """The start time of a process (field 22 of /proc/PID/stat), None if it is gone (or a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else fields[19]


def _alive(pid: int, started: str | None) -> bool:
    return pid > 0 and started is not None and starttime(pid) == started


def owner_tag(pid: int | None = None) -> str:
    pid = pid or os.getpid()
    return f"{pid}:{starttime(pid)}"


def _tag_alive(tag: str) -> bool:
    pid, _, start = tag.partition(":")
    return pid.isdigit() and _alive(int(pid), start or None)


@contextmanager
def _locked(name: str) -> Iterator[None]:
    """Serialize machine-changing steps across test sessions."""
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    with open(STATE_DIR / f"{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(argv: list[str], check: bool = True, timeout: float = 120, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and proc.returncode != 0:
        raise IncusError(f"{' '.join(argv)}: exit {proc.returncode}\n{proc.stdout}{proc.stderr}")
    return proc


def incus(*args: str, check: bool = True, timeout: float = 120, input: str | None = None) -> subprocess.CompletedProcess[str]:
    """The incus CLI (as this process's user)."""
    return _run(["incus", *args], check=check, timeout=timeout, input=input)


def incus_json(path: str) -> Any:
    """``incus query PATH`` decoded; None when it prints nothing (e.g. an empty list of pools)."""
    text = incus("query", path).stdout.strip()
    return json.loads(text) if text else None


# --------------------------------------------------------------------------- 1. install


def installed() -> bool:
    return shutil.which("incus") is not None and os.access(INCUSD, os.X_OK)


def _codename() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("VERSION_CODENAME="):
                return line.partition("=")[2].strip().strip('"')
    except OSError:
        pass
    return ""


def _sources_text() -> str:
    files = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*.list")),
             *sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))]
    text: list[str] = []
    for path in files:
        try:
            text.extend(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#"))
        except OSError:
            continue
    return "\n".join(text)


def has_backports_source() -> bool:
    return BACKPORTS in _sources_text().split()


def _debian_mirror() -> tuple[str, str | None]:
    """(URI, Signed-By) of the deb822 stanza apt uses for bookworm, else deb.debian.org."""
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        try:
            stanzas = path.read_text().split("\n\n")
        except OSError:
            continue
        for stanza in stanzas:
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if ":" in line and not line.lstrip().startswith("#"):
                    key, _, value = line.partition(":")
                    fields[key.strip().lower()] = value.strip()
            if "bookworm" in fields.get("suites", "").split() and fields.get("uris"):
                return fields["uris"].split()[0], fields.get("signed-by")
    return "http://deb.debian.org/debian", None


def backports_source_text() -> str:
    uri, signed_by = _debian_mirror()
    keyring = signed_by or "/usr/share/keyrings/debian-archive-keyring.gpg"
    return f"Types: deb\nURIs: {uri}\nSuites: {BACKPORTS}\nComponents: main\nSigned-By: {keyring}\n"


def ensure_installed(log: Any = None) -> float | None:
    """Install incus from bookworm-backports if it is not installed; seconds spent (None: was there)."""
    if installed():
        return None
    if os.geteuid() != 0:
        raise IncusError("incus is not installed and installing it needs root")
    started = time.monotonic()
    with _locked("install"):
        if installed():
            return None
        bookworm = _codename() == "bookworm"  # newer Debian releases have incus in main
        if bookworm and not has_backports_source():
            BACKPORTS_SOURCE.write_text(backports_source_text())
            if log:
                log(f"added {BACKPORTS_SOURCE}")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        apt = ["apt-get", "-q", "-o", "DPkg::Lock::Timeout=300"]
        _run([*apt, "update"], timeout=600, env=env)
        target = ["-t", BACKPORTS] if bookworm else []
        _run([*apt, "install", "-y", "--no-install-recommends", *target, PACKAGE], timeout=1200, env=env)
    if not installed():
        raise IncusError(f"apt-get installed {PACKAGE} but incus or {INCUSD} is still missing")
    return time.monotonic() - started


# --------------------------------------------------------------------------- 2. the daemon


def daemon_answers() -> bool:
    if not INCUS_SOCKET.exists():
        return False
    return incus("query", "/1.0", check=False, timeout=10).returncode == 0


@dataclass
class IncusDaemon:
    """incusd, started by hand unless one is running; stopped only by whoever started it."""

    state_file: Path = STATE_DIR / "incusd.json"
    ready_timeout: float = 60.0
    pid: int | None = None
    started_here: bool = False
    seconds: float = 0.0

    def _read_state(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.state_file.read_text()))
        except (OSError, ValueError):
            return {}

    def start(self) -> IncusDaemon:
        begun = time.monotonic()
        with _locked("daemon"):
            state = self._read_state()
            pid = int(state.get("pid", 0) or 0)
            ours_before = _alive(pid, state.get("starttime"))
            if daemon_answers():
                # Left by a crashed session of ours (its owner is dead): adopt it.
                if ours_before and not _tag_alive(str(state.get("owner", ""))):
                    self._save(pid, str(state["starttime"]), str(state.get("log", "")))
                    self.pid, self.started_here = pid, True
                return self
            if ours_before:  # our daemon, but not answering: give it its ready timeout
                self._wait_ready()
                self.pid, self.started_here = pid, True
                self._save(pid, str(state["starttime"]), str(state.get("log", "")))
                return self
            Path("/var/log/incus").mkdir(parents=True, exist_ok=True)
            log_path = STATE_DIR / "incusd.console"
            with open(log_path, "ab") as log:
                proc = subprocess.Popen([INCUSD, "--group", "incus-admin", "--logfile", "/var/log/incus/incus.log"],
                                        stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
            self.pid, self.started_here = proc.pid, True
            self._save(proc.pid, str(starttime(proc.pid)), str(log_path))
            try:
                self._wait_ready(proc)
            except BaseException:
                self.stop()
                raise
        self.seconds = time.monotonic() - begun
        return self

    def _save(self, pid: int, starttime: str, log: str) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps({"pid": pid, "starttime": starttime, "owner": owner_tag(), "log": log}))

    def _wait_ready(self, proc: subprocess.Popen[bytes] | None = None) -> None:
        ready = _run(["incus", "admin", "waitready", f"--timeout={int(self.ready_timeout)}"], check=False,
                     timeout=self.ready_timeout + 10)
        if ready.returncode != 0:
            code = proc.poll() if proc else None
            console = STATE_DIR / "incusd.console"
            tail = console.read_text(errors="replace")[-2000:] if console.exists() else ""
            raise IncusError(f"incusd not ready after {self.ready_timeout:g}s (exit code {code}): {ready.stderr}\n{tail}")

    def stop(self, timeout: float = 60.0) -> bool:
        """Stop the daemon if this process started (or adopted) it. True if it was stopped."""
        if not self.started_here or not self.pid:
            return False
        state = self._read_state()
        started = state.get("starttime") if int(state.get("pid", 0) or 0) == self.pid else starttime(self.pid)
        if _alive(self.pid, started) and any(_tag_alive(t) and t != owner_tag() for t in _owner_tags()):
            return False  # another live test session still has containers on it; it will adopt the daemon
        if _alive(self.pid, started):
            # Stops the instances cleanly, then the daemon exits.
            _run(["incus", "admin", "shutdown", f"--timeout={int(timeout)}"], check=False, timeout=timeout + 10)
            deadline = time.monotonic() + timeout
            while _alive(self.pid, started) and time.monotonic() < deadline:
                time.sleep(0.1)
            for sig in (signal.SIGTERM, signal.SIGKILL):
                if not _alive(self.pid, started):
                    break
                os.kill(self.pid, sig)
                end = time.monotonic() + 10
                while _alive(self.pid, started) and time.monotonic() < end:
                    time.sleep(0.1)
        # Our child (unless adopted): reap it. Its threads may still be exiting after the
        # leader shows as a zombie, so waitpid can say "not yet" for a moment.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if os.waitpid(self.pid, os.WNOHANG)[0] == self.pid:
                    break
            except ChildProcessError:
                break
            time.sleep(0.05)
        self.state_file.unlink(missing_ok=True)
        self.started_here = False
        return True


def _owner_tags() -> list[str]:
    try:
        instances = json.loads(incus("list", "--format", "json", check=False, timeout=30).stdout or "[]")
    except ValueError:
        return []
    return [str(i.get("config", {}).get(OWNER_KEY)) for i in instances if i.get("config", {}).get(OWNER_KEY)]


# --------------------------------------------------------------------------- 3. init


def ensure_initialised(pool: str = POOL) -> list[str]:
    """A dir storage pool and a root disk in the default profile; never a network. What was done."""
    done: list[str] = []
    with _locked("init"):
        pools = [p.rsplit("/", 1)[-1] for p in incus_json("/1.0/storage-pools") or []]
        profile = incus_json("/1.0/profiles/default") or {}
        has_root = any(d.get("type") == "disk" and d.get("path") == "/" for d in profile.get("devices", {}).values())
        preseed: dict[str, Any] = {"config": {}, "networks": []}
        if pool not in pools:
            preseed["storage_pools"] = [{"name": pool, "driver": "dir"}]
            done.append(f"storage pool {pool} (dir)")
        if not has_root:
            devices = dict(profile.get("devices", {}))
            devices["root"] = {"path": "/", "pool": pool, "type": "disk"}
            preseed["profiles"] = [{"name": "default", "devices": devices}]
            done.append(f"root disk on {pool} in the default profile")
        if done:
            incus("admin", "init", "--preseed", input=json.dumps(preseed))  # JSON is YAML
    managed = [n["name"] for n in incus_json("/1.0/networks?recursion=1") or [] if n.get("managed")]
    if managed:  # not ours to remove; but say so, since our containers must not use them
        print(f"note: incus has managed networks {managed} (not created by the tests)", file=sys.stderr)
    return done


# --------------------------------------------------------------------------- 4. image


def ensure_image(alias: str = IMAGE_ALIAS, rootfs: Path = ROOTFS, out: Path = IMAGE_DIR) -> str | None:
    """Build (cached) and import the test image; returns what was done or None."""
    _run(["sh", str(HERE / "incus_image.sh"), str(rootfs), str(out)], timeout=900)
    key = (out / ".complete").read_text().strip()
    with _locked("image"):
        current = incus("query", f"/1.0/images/aliases/{alias}", check=False)
        if current.returncode == 0:
            fingerprint = json.loads(current.stdout)["target"]
            image = incus_json(f"/1.0/images/{fingerprint}")
            if image.get("properties", {}).get("deployer.key") == key:
                return None
            incus("image", "alias", "delete", alias)
            incus("image", "delete", fingerprint, check=False)  # instances do not need their image
        incus("image", "import", str(out / "meta.tar"), str(out / "rootfs.tar"), "--alias", alias, timeout=600)
    return f"imported {alias} ({key})"


# --------------------------------------------------------------------------- 5. containers


def cleanup_stale() -> list[str]:
    """Delete test containers whose owning process is gone (crashed sessions)."""
    deleted = []
    instances = json.loads(incus("list", "--format", "json", check=False).stdout or "[]")
    for instance in instances:
        tag = instance.get("config", {}).get(OWNER_KEY)
        if tag and not _tag_alive(str(tag)):
            incus("delete", "--force", instance["name"], check=False)
            deleted.append(instance["name"])
    return deleted


@dataclass
class Incus:
    """The whole setup, for a test session: ``Incus().setup()`` ... ``close()``."""

    daemon: IncusDaemon = field(default_factory=IncusDaemon)
    alias: str = IMAGE_ALIAS
    timings: dict[str, float] = field(default_factory=dict)
    launched: list[str] = field(default_factory=list)

    def setup(self) -> Incus:
        def timed(name: str, step: Any) -> Any:
            t = time.monotonic()
            result = step()
            self.timings[name] = round(time.monotonic() - t, 3)
            return result

        installed_in = timed("install", ensure_installed)
        if installed_in is None:
            self.timings.pop("install")
        timed("daemon start", self.daemon.start)
        timed("init", ensure_initialised)
        timed("stale cleanup", cleanup_stale)
        timed("image", lambda: ensure_image(self.alias))
        return self

    def launch(self, name: str | None = None, wait: bool = True, config: dict[str, str] | None = None) -> str:
        """A running container of the test image, cron started in it."""
        name = name or NAME_PREFIX + secrets.token_hex(4)
        options = [f"{OWNER_KEY}={owner_tag()}", *(f"{k}={v}" for k, v in (config or {}).items())]
        argv = ["launch", self.alias, name, "--quiet"]
        for option in options:
            argv += ["--config", option]
        t = time.monotonic()
        incus(*argv, timeout=120)
        self.launched.append(name)
        if wait:
            deadline = time.monotonic() + 20
            while self.exec(name, ["test", "-s", "/run/crond.pid"]).returncode != 0:
                if time.monotonic() > deadline:
                    raise IncusError(f"cron did not start in {name}: {self.exec(name, ['cat', '/var/log/cron.console']).stdout}")
                time.sleep(0.05)
        self.timings.setdefault("launch (first)", round(time.monotonic() - t, 3))
        return name

    def exec(self, name: str, argv: list[str], input: str | None = None, check: bool = False) -> subprocess.CompletedProcess[str]:
        return incus("exec", "-T", name, "--", *argv, input=input, check=check)

    def stop(self, name: str) -> None:
        incus("stop", "--force", name)

    def delete(self, *names: str) -> None:
        """Delete containers (running or not), in one incus command."""
        if not names:
            return
        incus("delete", "--force", *names, check=False, timeout=120)
        for name in names:
            if name in self.launched:
                self.launched.remove(name)

    def close(self) -> None:
        self.delete(*self.launched)
        self.daemon.stop()


# --------------------------------------------------------------------------- sshd on loopback


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LoopbackSshd:
    """A separate sshd on 127.0.0.1:<free port> with its own config, host key and client key."""

    workdir: Path
    user: str = "root"
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def client_key(self) -> Path:
        return self.workdir / "client_key"

    @property
    def known_hosts(self) -> Path:
        return self.workdir / "known_hosts"

    @property
    def log(self) -> Path:
        return self.workdir / "sshd.log"

    @property
    def spec(self) -> str:
        return f"{self.user}@127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> LoopbackSshd:
        sshd = shutil.which("sshd") or "/usr/sbin/sshd"
        if not os.access(sshd, os.X_OK):
            raise IncusError("sshd is not installed (apt-get install openssh-server)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        for key in ("host_key", "client_key"):
            (self.workdir / key).unlink(missing_ok=True)
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"deployer-tests-{key}", "-f", str(self.workdir / key)])
        (self.workdir / "authorized_keys").write_text((self.workdir / "client_key.pub").read_text())
        os.chmod(self.workdir / "authorized_keys", 0o600)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
        self.port = free_port()
        config = self.workdir / "sshd_config"
        config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {self.workdir / 'host_key'}\n"
            f"PidFile {self.workdir / 'sshd.pid'}\nAuthorizedKeysFile {self.workdir / 'authorized_keys'}\n"
            "UsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n"
            "PermitRootLogin prohibit-password\nStrictModes no\nAllowUsers " + self.user + "\nLogLevel VERBOSE\n")
        host_pub = (self.workdir / "host_key.pub").read_text().split()
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {host_pub[0]} {host_pub[1]}\n")
        with open(self.log, "ab") as log:  # sshd has its own copy of the descriptor
            self.proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(config)], stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise IncusError(f"sshd did not start on port {self.port}: {self.log.read_text(errors='replace')[-2000:]}") from None
                time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


# --------------------------------------------------------------------------- by hand


def main(argv: list[str]) -> int:
    """``up``: set up and leave running; ``down``: stop a daemon started by ``up`` or a
    crashed session; ``cleanup``: delete containers of dead sessions; ``bench``: set up,
    launch and delete one container, tear down what was started, print the timings."""
    command = argv[0] if argv else "bench"
    if command == "cleanup":
        print("\n".join(cleanup_stale()))
        return 0
    if command == "down":
        daemon = IncusDaemon()
        state = daemon._read_state()
        if state and _alive(int(state["pid"]), state.get("starttime")):
            daemon.pid, daemon.started_here = int(state["pid"]), True
        cleanup_stale()
        print("stopped" if daemon.stop() else "no daemon started by the tests")
        return 0
    env = Incus().setup()
    if command == "up":
        print(json.dumps(env.timings), "\nincus is up; `python3 tests/harness/incus.py down` stops it")
        env.daemon.started_here = False  # leave it running; `down` (or the next session) takes it
        return 0
    name = env.launch()
    t = time.monotonic()
    env.delete(name)
    env.timings["delete"] = round(time.monotonic() - t, 3)
    t = time.monotonic()
    stopped = env.daemon.stop()
    if stopped:
        env.timings["daemon stop"] = round(time.monotonic() - t, 3)
    print(json.dumps(env.timings, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
