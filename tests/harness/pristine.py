"""Pristine Debian systems for the `fresh` tier: a stock Debian (minbase + python3, nothing else)
in which the README's two commands are run as a newcomer would run them.

The system is an overlay on a cached debootstrap (``build_rootfs.sh`` with
``DEPLOYER_TEST_PRISTINE=1``), so every test starts from the same untouched tree. It lives in a
mount and PID namespace of its own (``unshare --mount --pid --fork``), with /proc, /dev, a tmpfs
/tmp and /run, and the machine's resolv.conf: a chroot, not a booted system (no init, no
systemd), which is all the two commands need. A cron daemon started inside counts as that
system's and is invisible to the machine's other tests; killing PID 1 of the namespace ends
everything started inside.

The network is the machine's. Where the machine reaches the package registries through a TLS
proxy with a CA of its own, that CA bundle is copied in (outside /etc/ssl, so Debian's own
ca-certificates never see it) and named by PIP_CERT/SSL_CERT_FILE: that is the network's
property, not the system's; nothing else of the machine's (no pip config, no wheels) goes in.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

HARNESS = Path(__file__).resolve().parent
REPO = HARNESS.parent.parent
CACHE = Path(os.environ.get("DEPLOYER_TEST_CACHE", "/var/cache/deployer-tests"))
SUITES = ("bookworm", "trixie")
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
CA_IN_SYSTEM = "/etc/deployer-test-network-ca.pem"
# What the machine's environment says of how to reach the registries (proxies, index, CA).
NETWORK_ENV = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
               "PIP_INDEX_URL", "PIP_TRUSTED_HOST", "PIP_DEFAULT_TIMEOUT")


def pristine_rootfs(suite: str) -> Path:
    """The cached stock system of ``suite`` (built once, ~50 s; kept between runs)."""
    path = CACHE / f"pristine-{suite}"
    if not (path / ".complete").exists():
        subprocess.run([str(HARNESS / "build_rootfs.sh"), str(path)], check=True,
                       env={**os.environ, "DEPLOYER_TEST_PRISTINE": "1", "DEPLOYER_TEST_SUITE": suite})
    return path


def fresh_clone(dest: Path) -> None:
    """What ``git clone`` of this checkout gives: the tracked files (and new ones not ignored), as
    they are in the work tree, nothing built (no .venv, no caches)."""
    listed = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            check=True, capture_output=True).stdout.split(b"\0")
    for raw in filter(None, listed):
        rel = os.fsdecode(raw)
        src = REPO / rel
        if not os.path.lexists(src):
            continue  # deleted in the work tree, not yet committed
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            os.symlink(os.readlink(src), target)
        else:
            shutil.copy2(src, target)


@dataclass
class Done:
    argv: list[str]
    exit_code: int
    output: str

    def __str__(self) -> str:
        return f"{' '.join(self.argv)}: exit {self.exit_code}\n{self.output}"


class PristineSystem:
    """A running pristine Debian system: ``sh(cmd)`` runs a login shell inside, as root or a user."""

    def __init__(self, suite: str) -> None:
        self.suite = suite
        self.lower = pristine_rootfs(suite)
        self.tmp = Path(tempfile.mkdtemp(prefix=f"pristine-{suite}-", dir=os.environ.get("DEPLOYER_TEST_TMP")))
        self.root = self.tmp / "root"
        for d in ("upper", "work", "root"):
            (self.tmp / d).mkdir()
        mount = (f"set -e; mount --make-rprivate /; "
                 f"mount -t overlay overlay -o lowerdir={self.lower},upperdir={self.tmp}/upper,workdir={self.tmp}/work {self.root}; "
                 f"mount -t proc proc {self.root}/proc; mount --rbind /dev {self.root}/dev; "
                 f"mount -t tmpfs tmpfs {self.root}/tmp; mount -t tmpfs tmpfs {self.root}/run; "
                 f"cp /etc/resolv.conf {self.root}/etc/resolv.conf; echo ready; "
                 # PID 1 of the namespace reaps what is orphaned inside (a daemon's children).
                 f"exec python3 -c 'import os, time\nwhile True:\n try: os.wait()\n except ChildProcessError: time.sleep(0.5)'")
        self.init = subprocess.Popen(["unshare", "--mount", "--pid", "--fork", "--kill-child", "sh", "-c", mount],
                                     stdout=subprocess.PIPE, text=True, start_new_session=True)
        assert self.init.stdout is not None
        if self.init.stdout.readline().strip() != "ready":
            self.close()
            raise RuntimeError(f"the pristine {suite} system did not start")
        self.ns_pid = self._child_pid()
        if HOST_CA.exists():
            shutil.copy(HOST_CA, self.path(CA_IN_SYSTEM))

    def _child_pid(self) -> int:
        """The PID (in the machine's namespace) of the namespace's PID 1: unshare's child."""
        children = Path(f"/proc/{self.init.pid}/task/{self.init.pid}/children").read_text().split()
        return int(children[0])

    def env(self, home: str) -> dict[str, str]:
        env = {"HOME": home, "LANG": "C.UTF-8", "TERM": "dumb", "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
        env.update({k: os.environ[k] for k in NETWORK_ENV if k in os.environ})
        if self.path(CA_IN_SYSTEM).exists():
            env.update(PIP_CERT=CA_IN_SYSTEM, SSL_CERT_FILE=CA_IN_SYSTEM, REQUESTS_CA_BUNDLE=CA_IN_SYSTEM)
        return env

    def sh(self, command: str, user: str = "root", timeout: float = 1200, env: dict[str, str] | None = None) -> Done:
        """``command`` in a login shell of ``user`` inside the system (its own PATH from
        /etc/profile and ~/.profile, as a person who logs in gets it)."""
        home = "/root" if user == "root" else f"/home/{user}"
        # su -l resets the environment: carry the network's variables through, but not PATH,
        # HOME or LANG, which the user's login shell sets itself (/etc/profile, ~/.profile).
        extra = " ".join(f"{k}={_quote(v)}" for k, v in {**self.env(home), **(env or {})}.items()
                         if k not in ("PATH", "HOME", "LANG", "TERM"))
        inner = ["/bin/bash", "-lc", command]
        if user != "root":
            inner = ["su", "-l", user, "-c", f"export {extra}; {command}" if extra else command]
        argv = ["nsenter", "-t", str(self.ns_pid), "-m", "-p", "--", "chroot", str(self.root), "env", "-i", *self._env_argv(home, env), *inner]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        return Done([command if user == "root" else f"({user}) {command}"], proc.returncode, proc.stdout + proc.stderr)

    def _env_argv(self, home: str, env: dict[str, str] | None) -> list[str]:
        return [f"{k}={v}" for k, v in {**self.env(home), **(env or {})}.items()]

    def path(self, inside: str) -> Path:
        """A path of the system, seen from the machine: the overlay is mounted only in the
        system's own mount namespace, which /proc/PID/root of its PID 1 shows."""
        return Path(f"/proc/{self.ns_pid}/root") / str(self.root).lstrip("/") / inside.lstrip("/")

    def close(self) -> None:
        if self.init.poll() is None:
            os.killpg(self.init.pid, signal.SIGKILL)  # --kill-child: the whole PID namespace goes
            self.init.wait()
        # The mounts lived in the namespace's own mount table: gone with it.
        shutil.rmtree(self.tmp, ignore_errors=True)


def _quote(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"
