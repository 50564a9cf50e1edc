"""Transports: how deployer reaches a target (local subprocess, SSH, incus exec)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from deployer.config.inventory import Target
from deployer.errors import Unreachable
from deployer.transport.base import Become, Transport
from deployer.transport.local import LocalTransport


def _known_hosts_from_env() -> str | None:
    return os.environ.get("DEPLOYER_KNOWN_HOSTS") or None


@dataclass(frozen=True)
class ConnectOptions:
    """How to connect, from the command line (the inventory says where and as whom).

    ``accept_new_host_keys``: record the key of a host never seen before (``--accept-new-host-keys``,
    like OpenSSH's accept-new); a changed key is refused regardless.
    ``known_hosts``: a known_hosts file read before ``~/.ssh/known_hosts`` and written to by
    accept-new (default: ``$DEPLOYER_KNOWN_HOSTS``; the inventory variable
    ``deployer_known_hosts`` of a host takes precedence).
    """

    accept_new_host_keys: bool = False
    known_hosts: str | None = field(default_factory=_known_hosts_from_env)


def connect(target: Target, options: ConnectOptions | None = None) -> Transport:
    """A transport for the target, as its inventory variables describe it (nothing is opened yet)."""
    become = Become(target.become_user, str(target.vars.get("ansible_become_method", "sudo"))) if target.become else None
    if target.connection == "local":
        return LocalTransport(become)
    if target.connection == "ssh":
        from deployer.transport.ssh import SSHTransport  # paramiko only when a target needs it

        return SSHTransport(target, become, options)
    if target.connection == "incus":
        from deployer.transport.incus import connect_incus  # `incus exec`, locally or on a host over SSH

        return connect_incus(target, become, options)
    raise Unreachable(
        f"the '{target.connection}' transport is not available in this version of deployer",
        hint="supported: ansible_connection local, ssh and community.general.incus",
    )
