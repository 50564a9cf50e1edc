"""The wrapper's alerts on real SSH hosts: a job deployed to two namespaced hosts fails twice
on one of them and then succeeds, each time by `deployer run` over SSH.

The SMTP relay (STARTTLS and a login) and the HTTP server (webhook, healthchecks pings) run
in the test process but listen inside the fleet's ``ctl`` namespace, on its bridge address:
the hosts reach them over their veth and the bridge as they would reach a relay on their
network, and each server records the address a connection came from, so the test knows the
host itself sent the mail, the webhook and the pings (not the controller).
"""

from __future__ import annotations

import contextlib
import functools
import shlex
import time
from pathlib import Path
from typing import Any

import pytest

from tests.alerts import remote
from tests.alerts.servers import in_netns, smtp_relay, web_server
from tests.fleet.conftest import make_project
from tests.harness import TestHosts

pytestmark = [pytest.mark.alerts, pytest.mark.fleet]


def test_a_failing_job_on_an_ssh_host_tells_once_then_its_recovery(fleet_factory: Any, tmp_path: Path) -> None:
    th = fleet_factory(["h1", "h2"], users=["app"])
    p = make_project(th, tmp_path)
    p.inventory({"h1": p.host_vars("h1"), "h2": p.host_vars("h2")})
    with contextlib.ExitStack() as servers:
        # Started in ctl, where 10.77.0.1 (th.gateway) is the hosts' way out.
        relay = in_netns(th.ctl_netns_path, lambda: servers.enter_context(smtp_relay(tmp_path, address=th.gateway)))
        web = in_netns(th.ctl_netns_path, lambda: servers.enter_context(web_server(address=th.gateway)))
        ca_pem = relay.ca_file.read_text()
        for host in ("h1", "h2"):
            remote.prepare_target(functools.partial(on_target, th, host), ca_pem)
        p.write("tasks/flaky.py", remote.TASK)
        p.write("deployer.yml", remote.declaration("app", th.gateway, relay.port, web.url + "/hook"))
        p.extra_env.update(remote.SECRETS, PING_URL=web.url + "/ping/check-1")
        applied = p.deployer("apply", "dev", "--yes")
        assert applied.exit_code == 0, applied

        started = time.time()
        for code in (3, 3, 0):
            on_target(th, "h2", ["sh", "-c", f"umask 022 && echo {code} > {remote.EXIT_FILE}"])
            ran = p.deployer("run", "dev", "flaky", "-H", "h2")
            assert ran.exit_code == code, ran
            assert f"giving up with {code}" in ran.stdout, ran
        ended = time.time()

        remote.check_servers(relay, web, "h2", client=th.host("h2").ip)
    remote.check_target(lambda argv: on_target(th, "h2", argv, ssh=True), started, ended)
    # h1 has the same release and never ran the job: no state, no metrics file there.
    assert on_target(th, "h1", ["ls", "-A", remote.METRICS_DIR]) == ""
    assert on_target(th, "h1", ["sh", "-c", f"ls -A {remote.STATE} 2>/dev/null || true"]) == ""


def on_target(th: TestHosts, host: str, argv: list[str], text: str | None = None, *, ssh: bool = False) -> str:
    """``argv`` run as root on ``host`` (over real SSH with ``ssh``, else entering its namespaces); its stdout."""
    done = th.ssh(host, shlex.join(argv)) if ssh else th.exec_on(host, argv, input=text)
    assert done.returncode == 0, f"{argv} on {host}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return str(done.stdout)
