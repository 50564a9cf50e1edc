"""The pure parts of the Incus transport: instance name, incus argv, SSH host spec (no daemon needed)."""

from __future__ import annotations

import pytest

from deployer.config.inventory import Target
from deployer.transport.address import parse_ssh_address as parse_ssh_host
from deployer.transport.base import Become
from deployer.transport.incus import IncusTransport, instance_name, ssh_target


def target(name: str = "web", **variables: object) -> Target:
    return Target(name, "incus", (), {"ansible_connection": "community.general.incus", **variables})


@pytest.mark.parametrize(("variables", "expected"), [
    ({}, "web"),
    ({"ansible_host": "c1.lxd.example"}, "c1"),  # like the plugin: the part before the first dot
    ({"ansible_host": "c1", "ansible_incus_host": "c2"}, "c2"),  # ansible_incus_host wins, as in the plugin
])
def test_instance_name(variables: dict[str, object], expected: str) -> None:
    assert instance_name(target("web", **variables)) == expected


def test_argv_local_remote_project_user_and_become() -> None:
    assert IncusTransport(target()).command(["python3", "-"]) == \
        ["incus", "exec", "-T", "local:web", "--", "python3", "-"]
    t = IncusTransport(target(ansible_incus_remote="recette", ansible_incus_project="shop",
                              deployer_incus_binary="/opt/incus/bin/incus", ansible_user="app"),
                       Become("root"))
    assert t.command(["python3", "-"]) == [
        "/opt/incus/bin/incus", "exec", "-T", "recette:web", "--project", "shop", "--",
        "/bin/su", "app", "-c", "sudo -n -H -u root -- python3 -"]
    assert t.where() == "instance 'web', project 'shop' on Incus remote 'recette'"


@pytest.mark.parametrize(("spec", "expected"), [
    ("host", (None, "host", None)),
    ("deploy@incus1.example:2222", ("deploy", "incus1.example", 2222)),
    ("ssh://root@[2001:db8::1]:22", ("root", "2001:db8::1", 22)),
    ("[2001:db8::1]", (None, "2001:db8::1", None)),
])
def test_parse_ssh_host(spec: str, expected: tuple[str | None, str, int | None]) -> None:
    assert parse_ssh_host(spec) == expected


@pytest.mark.parametrize("spec", ["root@", "@host", "host:port", "a b", ""])
def test_parse_ssh_host_refuses(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_ssh_host(spec)


def test_ssh_target_takes_only_the_ssh_variables() -> None:
    t = target(ansible_user="app", ansible_port=2200, ansible_ssh_private_key_file="~/.ssh/k", deployer_known_hosts="/kh")
    host = ssh_target(t, "deploy@incus1:2222")
    assert host.connection == "ssh" and host.name == "incus1"
    assert host.vars == {"ansible_host": "incus1", "ansible_port": 2222, "ansible_user": "deploy",
                         "ansible_ssh_private_key_file": "~/.ssh/k", "deployer_known_hosts": "/kh"}
