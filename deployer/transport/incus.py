"""Incus instances: ``incus exec [remote:]instance [--project P] -- argv``, stdin passed through.

The inventory variables mean what they mean to Ansible's ``community.general.incus``
connection plugin:

- the instance is ``ansible_incus_host``, else ``ansible_host``, else the inventory name
  (like the plugin, only the part before the first dot: instance names are not FQDNs);
- ``ansible_incus_remote``: the Incus remote, as ``incus remote list`` names it (default
  ``local``, the daemon of the machine ``incus`` runs on);
- ``ansible_incus_project``: the Incus project (default: the remote's own default project;
  ``--project`` is passed only when the variable is set);
- ``ansible_user``: the user inside the instance (default root); another user is reached
  with ``incus_become_method`` (default ``/bin/su``, as in the plugin): ``su USER -c ...``;
- ``ansible_become`` and friends: sudo inside the instance, as for any target.

The plugin's ``ansible_incus_executable``/``ansible_executable`` (the shell the plugin wraps
every command in) is not used: deployer runs its argv directly, no shell in between.

deployer's own variables:

- ``deployer_incus_binary``: the incus client to run (default ``incus`` from PATH);
- ``deployer_incus_ssh_host: [user@]host[:port]``: run ``incus exec`` ON that host, reached
  with the SSH transport (one SSH connection per instance, reused for the whole command),
  for Incus hosts that are only reachable over SSH. ``~/.ssh/config`` applies to ``host``;
  ``ansible_ssh_private_key_file``, ``ansible_ssh_common_args``/``_extra_args``,
  ``deployer_ssh_jump``, ``deployer_known_hosts`` and ``ansible_timeout`` of the instance
  are used for that SSH connection. ``ansible_user``/``ansible_port`` are NOT: they belong
  to the instance (user inside it); the SSH user and port are in ``deployer_incus_ssh_host``.
  The SSH user must be allowed to use Incus there (e.g. member of ``incus-admin``).

``IncusTransport`` wraps any inner transport (local by default, SSH for the above): every
run is exactly one exec of the inner transport, so counters are the inner transport's.
Failures of Incus itself (instance missing, stopped or frozen, remote or project unknown,
no permission, daemon down, ``incus`` not installed) are ``Unreachable`` (exit 4) naming the
instance and where ``incus`` ran; a command's own failures are returned as results.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from deployer.config.inventory import Target
from deployer.errors import TargetError, Unreachable
from deployer.transport.address import parse_ssh_address
from deployer.transport.base import Become, Counters, Result, Transport
from deployer.transport.local import LocalTransport

if TYPE_CHECKING:
    from deployer.transport import ConnectOptions

SSH_HOST_VAR = "deployer_incus_ssh_host"
BINARY_VAR = "deployer_incus_binary"

# Variables of the instance that describe the SSH connection to its Incus host.
SSH_VARS = ("ansible_ssh_private_key_file", "ansible_private_key_file", "ansible_ssh_common_args",
            "ansible_ssh_extra_args", "deployer_ssh_jump", "deployer_known_hosts", "ansible_timeout",
            "ansible_ssh_timeout")

_REMOTE_UNKNOWN = re.compile(r'The remote "([^"]*)" doesn\'t exist')


def instance_name(target: Target) -> str:
    """The instance, as the community.general.incus plugin finds it."""
    name = target.vars.get("ansible_incus_host") or target.vars.get("ansible_host") or target.name
    return str(name).split(".")[0]


def ssh_target(target: Target, spec: str) -> Target:
    """The Incus host of ``target`` as an SSH target (for the SSH transport)."""
    try:
        user, host, port = parse_ssh_address(spec)
    except ValueError:
        raise Unreachable(f"{SSH_HOST_VAR} of {target.name} is '{spec}', which is not [user@]host[:port]") from None
    variables: dict[str, Any] = {k: target.vars[k] for k in SSH_VARS if k in target.vars}
    variables["ansible_host"] = host
    if port is not None:
        variables["ansible_port"] = port
    if user:
        variables["ansible_user"] = user
    return Target(host, "ssh", (), variables)


class IncusTransport:
    """Runs every command in one Incus instance, through ``incus exec`` run by ``inner``."""

    name = "incus"

    def __init__(self, target: Target, become: Become | None = None, inner: Transport | None = None,
                 host: str | None = None) -> None:
        """``host``: where ``incus`` runs, for messages (default: this machine)."""
        v = target.vars
        self.target = target
        self.instance = instance_name(target)
        self.remote = str(v.get("ansible_incus_remote") or "local")
        project = v.get("ansible_incus_project")
        self.project = str(project) if project else None
        self.binary = str(v.get(BINARY_VAR) or "incus")
        self.user = str(v.get("ansible_user") or "root")
        self.su = str(v.get("incus_become_method") or "/bin/su")
        self.become = become
        self.inner: Transport = inner if inner is not None else LocalTransport()
        self.host = host or "this machine"
        # one incus exec = one exec of the inner transport: its counters are ours
        self.counters: Counters = self.inner.counters

    # ------------------------------------------------------------------ naming
    @property
    def address(self) -> str:
        """``remote:instance``, as incus takes it."""
        return f"{self.remote}:{self.instance}"

    def where(self) -> str:
        project = f", project '{self.project}'" if self.project else ""
        if self.remote == "local":
            return f"instance '{self.instance}'{project} (Incus on {self.host})"
        via = f" (incus run on {self.host})" if self.host != "this machine" else ""
        return f"instance '{self.instance}'{project} on Incus remote '{self.remote}'{via}"

    def _short(self) -> str:
        project = f", project '{self.project}'" if self.project else ""
        remote = f" on Incus remote '{self.remote}'" if self.remote != "local" else ""
        return f"instance '{self.instance}'{project}{remote}"

    def _on(self) -> str:
        """Where to type a suggested incus command."""
        return "" if self.host == "this machine" else f" (on {self.host})"

    def _incus(self, *words: str) -> str:
        """An incus command line as the operator would type it, for hints."""
        project = ["--project", self.project] if self.project else []
        return shlex.join([self.binary, *words, *project])

    # ------------------------------------------------------------------ the primitive
    def command(self, argv: list[str]) -> list[str]:
        """The argv run by the inner transport."""
        inside = list(argv)
        if self.become is not None and self.become.user != self.user:
            try:
                inside = self.become.wrap(inside)
            except ValueError as exc:
                raise TargetError(str(exc)) from None
        if self.user != "root":
            inside = [self.su, self.user, "-c", shlex.join(inside)]
        project = ["--project", self.project] if self.project else []
        # -T: never a terminal, whatever stdin/stdout are: stdin bytes and EOF pass through.
        return [self.binary, "exec", "-T", self.address, *project, "--", *inside]

    def run(self, argv: list[str], stdin: bytes = b"", timeout: float | None = None,
            on_stdout: Callable[[bytes], None] | None = None) -> Result:
        full = self.command(argv)
        try:
            result = self.inner.run(full, stdin, timeout, on_stdout)
        except TargetError as exc:
            if isinstance(self.inner, LocalTransport) and "is not installed" in exc.message:
                raise Unreachable(f"{self.where()}: '{self.binary}' (the Incus client) is not installed on this machine",
                                  hint=f"install incus, or set {BINARY_VAR} to its path") from None
            # an SSH transport's message names the SSH host already
            prefix = self.where() if isinstance(self.inner, LocalTransport) else self._short()
            raise type(exc)(f"{prefix}: {exc.message}", hint=exc.hint) from None
        self._check(result)
        return result

    def _check(self, result: Result) -> None:
        """Raise Unreachable when incus itself failed (the command never ran)."""
        if result.exit_code == 0 or result.stdout:
            return
        text = result.stderr.decode("utf-8", "replace").strip()
        lines = text.splitlines()
        if result.exit_code == 127 and "Error: Command not found" not in text and self.binary in text:
            # the shell of the SSH host did not find incus (in the instance it is "Error: Command not found")
            raise Unreachable(f"{self.where()}: '{self.binary}' (the Incus client) is not installed on {self.host}: {lines[-1]}",
                              hint=f"install incus there, or set {BINARY_VAR} to its path")
        if not lines or not lines[-1].startswith("Error: ") or result.exit_code != 1:
            return  # the command's own failure: its exit code and output say why
        # incus ends with one "Error: ..." line (after its first-run welcome text, for a new user);
        # only the messages below are recognised as incus's own, anything else is the command's.
        error = lines[-1][len("Error: "):]
        fail = self._fail(error)
        if fail is not None:
            raise fail

    def _fail(self, error: str) -> Unreachable | None:
        where = self.where()
        lowered = error.lower()
        if error.endswith("Instance not found"):
            return Unreachable(f"{where}: no such instance",
                               hint=f"'{self._incus('list', self.remote + ':')}'{self._on()} shows the instances; the instance name is "
                                    "ansible_incus_host, else ansible_host, else the inventory name")
        if error.endswith("Instance is not running"):
            return Unreachable(f"{where}: the instance is stopped", hint=f"start it{self._on()}: {self._incus('start', self.address)}")
        if error.endswith("Instance is frozen"):
            return Unreachable(f"{where}: the instance is frozen (paused)", hint=f"resume it{self._on()}: {self._incus('resume', self.address)}")
        match = _REMOTE_UNKNOWN.search(error)
        if match:
            return Unreachable(f"{where}: the Incus remote '{match.group(1)}' is not known on {self.host}",
                               hint=f"'{self.binary} remote list' shows the remotes; add it with '{self.binary} remote add "
                                    f"{match.group(1)} <address>', or fix ansible_incus_remote")
        if error.endswith("Project not found"):
            return Unreachable(f"{where}: the Incus project '{self.project}' does not exist",
                               hint=f"'{self.binary} project list {self.remote}:' shows the projects; fix ansible_incus_project")
        if ("needed permissions" in lowered or "does not have permission" in lowered or "entitlement" in lowered
                or "forbidden" in lowered or "not authorized" in lowered):
            return Unreachable(f"{where}: not permitted to use Incus: {error}",
                               hint=f"add the user running incus{self._on()} to the incus-admin group, or use a remote that trusts it")
        if "doesn't appear to be started" in error or ("unix.socket" in error and (
                "no such file" in lowered or "connection refused" in lowered)):
            return Unreachable(f"{where}: the Incus daemon is not running on {self.host} ({error})",
                               hint="start it (systemctl start incus)")
        if "dial tcp" in error or "certificate" in lowered or "tls:" in lowered:
            return Unreachable(f"{where}: cannot reach the Incus remote '{self.remote}': {error}")
        return None

    def close(self) -> None:
        self.inner.close()


def connect_incus(target: Target, become: Become | None = None, options: ConnectOptions | None = None) -> IncusTransport:
    """The transport for an ``ansible_connection: community.general.incus`` target."""
    spec = target.vars.get(SSH_HOST_VAR)
    if not spec:
        return IncusTransport(target, become)
    from deployer.transport.ssh import SSHTransport  # paramiko only when a target needs it

    host = ssh_target(target, str(spec))
    try:
        ssh = SSHTransport(host, None, options)
    except TargetError as exc:  # e.g. a key file that does not exist: say which instance it was for
        raise type(exc)(f"instance '{instance_name(target)}' (Incus on {spec}): {exc.message}", hint=exc.hint) from None
    return IncusTransport(target, become, ssh, host=ssh.hop.address)
