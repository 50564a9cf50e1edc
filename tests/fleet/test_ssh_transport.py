"""SSHTransport in-process against a real sshd: one connection, quoting, large I/O, timeouts.

The test process lives in the machine's network namespace, so it reaches the host through
the harness's loopback forward (127.0.0.1:port, with a ``[127.0.0.1]:port`` known_hosts line).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from deployer.config.inventory import Target
from deployer.errors import TargetError, Unreachable
from deployer.transport import ConnectOptions, connect
from deployer.transport.ssh import SSHTransport
from tests.harness import TestHosts

pytestmark = pytest.mark.fleet


@pytest.fixture
def host(fleet_factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TestHosts:
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ssh of the machine
    monkeypatch.delenv("DEPLOYER_KNOWN_HOSTS", raising=False)
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    th: TestHosts = fleet_factory(1, users=["alice"], sudo_users=["alice"])
    return th


def target(th: TestHosts, user: str = "root", **extra: Any) -> Target:
    address, port = th.loopback_address("h1")
    return Target("h1", "ssh", (), {"ansible_host": address, "ansible_port": port, "ansible_user": user,
                                    "ansible_ssh_private_key_file": str(th.client_key_path),
                                    "deployer_known_hosts": str(th.known_hosts_path), **extra})


def test_one_lazy_connection_for_every_exec(host: TestHosts) -> None:
    transport = connect(target(host), ConnectOptions())
    assert isinstance(transport, SSHTransport)
    assert transport.counters.connections == 0  # nothing opened before the first run
    for _ in range(3):
        assert transport.run(["hostname"]).stdout == b"h1\n"
    assert transport.counters.connections == 1 and transport.counters.execs == 3
    sessions = host.exec_on("h1", ["sh", "-c", "grep -c 'Accepted publickey' /var/log/sshd.log"]).stdout.strip()
    assert sessions == "1"  # the server saw one login too
    transport.close()
    transport.close()  # twice is fine


def test_argv_reaches_the_target_word_for_word(host: TestHosts) -> None:
    transport = SSHTransport(target(host))
    words = ["a b", "$(touch /tmp/pwned)", "`id`", "'single'", '"double"', "*", ";", "50%", "back\\slash", "", "é"]
    result = transport.run(["python3", "-c", "import sys, json; print(json.dumps(sys.argv[1:]))", *words])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == words
    assert host.exec_on("h1", ["test", "-e", "/tmp/pwned"]).returncode == 1
    transport.close()


def test_exit_code_stdout_and_stderr(host: TestHosts) -> None:
    transport = SSHTransport(target(host))
    result = transport.run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (result.exit_code, result.stdout, result.stderr) == (3, b"out\n", b"err\n")
    assert transport.run(["cat"], b"through stdin").stdout == b"through stdin"
    assert transport.run(["true"]).exit_code == 0
    transport.close()


@pytest.mark.parametrize("stdin_size", [100_000, 6_000_000])
def test_large_stdin_stdout_and_stderr_without_deadlock(host: TestHosts, stdin_size: int) -> None:
    """The command fills stderr (more than a channel window) BEFORE reading stdin, then
    writes a lot on stdout: a transport that does not read both while sending hangs."""
    program = (
        "import sys, hashlib\n"
        "sys.stderr.buffer.write(b'e' * 5_000_000); sys.stderr.flush()\n"
        "data = sys.stdin.buffer.read()\n"
        "sys.stdout.buffer.write(hashlib.sha256(data).hexdigest().encode() + b'\\n' + b'o' * 7_000_000)\n"
    )
    payload = bytes(range(256)) * (stdin_size // 256)
    transport = SSHTransport(target(host))
    started = time.monotonic()
    result = transport.run(["python3", "-c", program], payload, timeout=60)
    assert time.monotonic() - started < 30
    assert result.exit_code == 0, result.stderr[-500:]
    assert result.stdout.split(b"\n", 1)[0].decode() == hashlib.sha256(payload).hexdigest()
    assert len(result.stdout) == 65 + 7_000_000 and result.stderr == b"e" * 5_000_000
    assert transport.counters.bytes_sent == len(payload)
    assert transport.counters.bytes_received == len(result.stdout) + len(result.stderr)
    transport.close()


def test_a_command_over_its_timeout_is_cut(host: TestHosts) -> None:
    transport = SSHTransport(target(host))
    started = time.monotonic()
    with pytest.raises(Unreachable, match=r"'sleep 30' did not finish within 1s"):
        transport.run(["sleep", "30"], timeout=1)
    assert time.monotonic() - started < 5
    assert transport.run(["echo", "still usable"]).stdout == b"still usable\n"  # same connection
    assert transport.counters.connections == 1
    transport.close()


def test_a_host_that_dies_mid_session(host: TestHosts) -> None:
    transport = SSHTransport(target(host))
    assert transport.run(["true"]).exit_code == 0
    host.stop("h1")
    with pytest.raises(Unreachable) as caught:
        transport.run(["true"])
    assert "h1, root@127.0.0.1:" in str(caught.value)
    assert "connection" in str(caught.value)
    transport.close()


def test_become_wraps_in_sudo_only_for_another_user(host: TestHosts) -> None:
    to_root = connect(target(host, user="alice", ansible_become=True))
    assert to_root.run(["id", "-un"]).stdout == b"root\n"
    assert to_root.run(["sh", "-c", "echo $HOME"]).stdout == b"/root\n"  # sudo -H
    to_root.close()
    same = connect(target(host, user="alice", ansible_become=True, ansible_become_user="alice"))
    result = same.run(["id", "-un"])
    assert result.stdout == b"alice\n" and result.argv == ("id", "-un")  # no sudo needed
    same.close()
    su = connect(target(host, user="alice", ansible_become=True, ansible_become_method="su"))
    with pytest.raises(TargetError, match="needs a password prompt"):
        su.run(["true"])
    su.close()


def test_keys_from_a_running_ssh_agent(host: TestHosts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No key file in the inventory nor in ~/.ssh: the operator's ssh-agent holds the key."""
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 5
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        env = {**os.environ, "SSH_AUTH_SOCK": str(sock)}
        subprocess.run(["ssh-add", str(host.client_key_path)], env=env, capture_output=True, check=True)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        plain = target(host)
        del plain.vars["ansible_ssh_private_key_file"]
        transport = SSHTransport(plain)
        assert transport.hop.key_files == []
        assert transport.run(["id", "-un"]).stdout == b"root\n"
        transport.close()
    finally:
        agent.terminate()
        agent.wait(timeout=5)


def test_no_key_to_log_in_with(host: TestHosts, tmp_path: Path) -> None:
    plain = target(host)
    del plain.vars["ansible_ssh_private_key_file"]
    with pytest.raises(Unreachable, match=r"^h1, root@127\.0\.0\.1:\d+: no usable private key for root: set "
                                          r"ansible_ssh_private_key_file, or IdentityFile in ~/\.ssh/config$"):
        SSHTransport(plain).run(["true"])
    missing = target(host, ansible_ssh_private_key_file=str(tmp_path / "nope"))
    with pytest.raises(Unreachable, match=r"the private key .*/nope \(ansible_ssh_private_key_file of h1\) does not exist"):
        connect(missing)


def test_accept_new_creates_the_users_known_hosts(host: TestHosts, tmp_path: Path) -> None:
    """No DEPLOYER_KNOWN_HOSTS: new keys go to ~/.ssh/known_hosts (created, like ssh does),
    in a format OpenSSH itself finds."""
    plain = target(host)
    del plain.vars["deployer_known_hosts"]
    with pytest.raises(Unreachable, match=r"host key not known: \[127\.0\.0\.1\]:\d+ presents ssh-ed25519 SHA256:"):
        SSHTransport(plain).run(["true"])
    assert not (tmp_path / ".ssh").exists()
    accepting = SSHTransport(plain, options=ConnectOptions(accept_new_host_keys=True))
    assert accepting.run(["true"]).exit_code == 0
    accepting.close()
    known = tmp_path / ".ssh" / "known_hosts"
    assert (tmp_path / ".ssh").stat().st_mode & 0o777 == 0o700
    address, port = host.loopback_address("h1")
    found = subprocess.run(["ssh-keygen", "-F", f"[{address}]:{port}", "-f", str(known)], capture_output=True, text=True)
    assert found.returncode == 0 and host.hosts[0].host_key in found.stdout, found
    strict = SSHTransport(plain)
    assert strict.run(["true"]).exit_code == 0
    strict.close()


# ----------------------------------------------------------------------------- host keys (issue 12, class 7)


def _other_key(tmp_path: Path, name: str) -> str:
    """``ssh-ed25519 AAAA...`` of a freshly made key: one the host does not have."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / name)], check=True)
    return " ".join((tmp_path / f"{name}.pub").read_text().split()[:2])


def _refusal(transport: SSHTransport) -> str:
    with pytest.raises(Unreachable) as caught:
        transport.run(["true"])
    transport.close()
    return str(caught.value)


def test_a_revoked_host_key_is_refused(host: TestHosts, tmp_path: Path) -> None:
    """The host's key is known (the inventory's file) and revoked (a @revoked line in the
    operator's file, or in the same file): refused, with --accept-new-host-keys too, and never
    a traceback (paramiko's own reader raises on marker lines)."""
    key = host.hosts[0].host_key
    revocations = tmp_path / "operator_known_hosts"
    revocations.write_text(f"@revoked * {key}\n")
    for options in (ConnectOptions(known_hosts=str(revocations)),
                    ConnectOptions(known_hosts=str(revocations), accept_new_host_keys=True)):
        error = _refusal(SSHTransport(target(host), options=options))
        assert re.search(r"HOST KEY REVOKED: \[127\.0\.0\.1\]:\d+ presents ssh-ed25519 SHA256:\S+, which a @revoked "
                         r"line \(~/operator_known_hosts line 1\) says must never be accepted", error), error
    # In the very file that lists it as known, after its ordinary line.
    both = tmp_path / "known_hosts"
    both.write_text(host.known_hosts_path.read_text() + f"@revoked * {key}\n")
    error = _refusal(SSHTransport(target(host, deployer_known_hosts=str(both))))
    assert "HOST KEY REVOKED" in error, error
    # Another key revoked: the host's own is still accepted.
    revocations.write_text(f"@revoked * {_other_key(tmp_path, 'old')}\n")
    fine = SSHTransport(target(host), options=ConnectOptions(known_hosts=str(revocations)))
    assert fine.run(["true"]).exit_code == 0
    fine.close()


def test_cert_authority_lines_are_read_and_refused_clearly(host: TestHosts, tmp_path: Path) -> None:
    authority = _other_key(tmp_path, "ca")
    known = tmp_path / "known_hosts"
    # Beside the host's own key, a CA line is ignored (and is no traceback).
    known.write_text(f"@cert-authority *.example.org {authority}\n" + host.known_hosts_path.read_text())
    fine = SSHTransport(target(host, deployer_known_hosts=str(known)))
    assert fine.run(["true"]).exit_code == 0
    fine.close()
    # Vouched for only by a CA: a clear refusal, and --accept-new-host-keys records nothing.
    known.write_text(f"@cert-authority * {authority}\n")
    for accept_new in (False, True):
        error = _refusal(SSHTransport(target(host, deployer_known_hosts=str(known)),
                                      options=ConnectOptions(accept_new_host_keys=accept_new)))
        assert ("known_hosts vouches for it only through a certificate authority (@cert-authority, ~/known_hosts line 1), "
                "and deployer cannot check host certificates. Refusing to connect") in error, error
    assert known.read_text() == f"@cert-authority * {authority}\n"
    assert not (tmp_path / ".ssh").exists()


def test_known_hosts_patterns_wildcards_and_negation(host: TestHosts, tmp_path: Path) -> None:
    key = host.hosts[0].host_key
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.?]:*,!other {key}\n")
    fine = SSHTransport(target(host, deployer_known_hosts=str(known)))
    assert fine.run(["true"]).exit_code == 0
    fine.close()
    address, port = host.loopback_address("h1")
    known.write_text(f"[127.0.0.*]:*,![{address}]:{port} {key}\n")  # negated: not this host
    assert "host key not known" in _refusal(SSHTransport(target(host, deployer_known_hosts=str(known))))


def test_no_inventory_variable_weakens_host_key_checking(host: TestHosts, tmp_path: Path) -> None:
    """The operator's known_hosts has another key for the host (what a man in the middle looks
    like). A hostile inventory turns checking off, points known_hosts at /dev/null and vouches
    for the presented key in a file of its own: still refused as a changed key, with or without
    --accept-new-host-keys, and no file of the operator's is written."""
    address, port = host.loopback_address("h1")
    operator = tmp_path / "operator_known_hosts"
    operator.write_text(f"[{address}]:{port} {_other_key(tmp_path, 'before')}\n")
    vouching = tmp_path / "inventory_known_hosts"
    vouching.write_text(host.known_hosts_path.read_text())
    hostile = {"ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
               "ansible_ssh_extra_args": "-o StrictHostKeyChecking=accept-new", "deployer_known_hosts": str(vouching)}
    for accept_new in (False, True):
        options = ConnectOptions(known_hosts=str(operator), accept_new_host_keys=accept_new)
        error = _refusal(SSHTransport(target(host, **hostile), options=options))
        assert f"HOST KEY CHANGED for [{address}]:{port}" in error, error
    assert operator.read_text().count("\n") == 1

    # A host no file knows, with the inventory's StrictHostKeyChecking=no: refused, nothing recorded, and said why.
    unknown = {"ansible_ssh_common_args": "-o StrictHostKeyChecking=no", "deployer_known_hosts": str(tmp_path / "none")}
    error = _refusal(SSHTransport(target(host, **unknown)))
    assert "host key not known" in error and "the inventory's StrictHostKeyChecking is not honoured" in error, error
    assert not (tmp_path / "none").exists() and not (tmp_path / ".ssh").exists()
    # The operator's choice still works: --accept-new-host-keys records it (in the first file in use).
    accepting = SSHTransport(target(host, **unknown), options=ConnectOptions(accept_new_host_keys=True))
    assert accepting.run(["true"]).exit_code == 0
    accepting.close()
    assert host.hosts[0].host_key in (tmp_path / "none").read_text()
