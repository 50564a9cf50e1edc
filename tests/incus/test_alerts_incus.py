"""The wrapper's alerts in a real Incus container: a deployed job fails twice, then succeeds,
each time by `deployer run` through `incus exec`.

The test containers have no network device (the tier never creates a managed network: it
would put an address on the machine's own interfaces), only a loopback, which their minimal
init leaves down. They reach the controller as an operator's network-less container would:
an Incus ``proxy`` device with ``bind=instance`` listens on the container's 127.0.0.1 and
connects, from the host's side, to the relay and HTTP server on this machine's 127.0.0.1
(the same port inside and out, so URLs and the relay's certificate hold in both places).
The test brings the container's loopback up first, as a full init would.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.alerts import remote
from tests.incus.conftest import IncusProject, alert_servers

pytestmark = [pytest.mark.alerts, pytest.mark.incus]


def test_a_failing_job_in_a_container_tells_once_then_its_recovery(incus_project: IncusProject, container: str,
                                                                   tmp_path: Path) -> None:
    p = incus_project

    with alert_servers(p, container, tmp_path) as (on_target, relay, web):
        p.write("tasks/flaky.py", remote.TASK)
        p.write("deployer.yml", remote.declaration("app", "127.0.0.1", relay.port, web.url + "/hook"))
        p.inventory({container: {}})
        p.extra_env.update(remote.SECRETS, PING_URL=web.url + "/ping/check-1")
        applied = p.deployer("apply", "dev", "--yes")
        assert applied.exit_code == 0, applied

        started = time.time()
        for code in (3, 3, 0):
            on_target(["sh", "-c", f"umask 022 && echo {code} > {remote.EXIT_FILE}"])
            ran = p.deployer("run", "dev", "flaky")
            assert ran.exit_code == code, ran
            assert f"giving up with {code}" in ran.stdout, ran
        ended = time.time()

        # The container's hostname is its name; through the proxy every client is 127.0.0.1.
        remote.check_servers(relay, web, container, client=None)
    remote.check_target(on_target, started, ended)
