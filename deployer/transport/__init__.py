"""Transports: how deployer reaches a target (local subprocess, SSH, incus exec)."""

from __future__ import annotations

from deployer.config.inventory import Target
from deployer.errors import Unreachable
from deployer.transport.base import Become, Transport
from deployer.transport.local import LocalTransport


def connect(target: Target) -> Transport:
    """A transport for the target, as its inventory variables describe it."""
    become = Become(target.become_user, str(target.vars.get("ansible_become_method", "sudo"))) if target.become else None
    if target.connection == "local":
        return LocalTransport(become)
    raise Unreachable(
        f"the '{target.connection}' transport is not available in this version of deployer",
        hint="only ansible_connection: local targets can be planned and applied for now",
    )
