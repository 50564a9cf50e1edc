"""healthchecks checks on real SSH hosts: one check per job and host, each in its host's own
probed zone; a run on h2 pings h2's check, from h2; destroy --limit h2 pauses h2's checks only.

The fake of healthchecks' API and ping endpoints (tests/alerts/fake_healthchecks.py says why a
fake and what of healthchecks it follows) runs in the test process but listens in the fleet's
``ctl`` namespace on its bridge address, over HTTPS (deployer takes http for the loopback
only) with a certificate of its own: the controller (deployer, in ctl) trusts it through
SSL_CERT_FILE, each host through the file its Python's OpenSSL reads by default. Each ping
records the address it came from.
"""

from __future__ import annotations

import contextlib
import json
import shlex
from pathlib import Path
from typing import Any

import pytest

from tests.alerts.fake_healthchecks import API_KEY, PING_KEY, fake_healthchecks
from tests.alerts.servers import in_netns, self_signed
from tests.fleet.conftest import make_project
from tests.harness import TestHosts

pytestmark = [pytest.mark.alerts, pytest.mark.fleet]

ZONES = {"h1": "Europe/Paris", "h2": "Europe/Kiev"}  # h2 reports a legacy name, which healthchecks renames
DEFAULT_CA_FILE = "/usr/lib/ssl/cert.pem"  # OpenSSL's default CA file on Debian: what the wrapper's urllib trusts


def declaration(api: str) -> str:
    return f"""\
project: demo
defaults:
  timeout: 1m
alerts:
  healthchecks:
    api: {api}
    api_key: {{secret: {{env: HC_API_KEY}}}}
    ping_url: {api}/ping
    ping_key: {{secret: {{env: HC_PING_KEY}}}}
jobs:
  backup:
    script: tasks/hello.py
    schedule: "0 3 * * *"
  report:
    script: tasks/hello.py
    schedule: "@hourly"
environments:
  dev:
    inventory: inventories/dev
"""


def test_checks_per_ssh_host_in_its_zone_pinged_from_it_and_destroy_limit_pauses_its_own(
        fleet_factory: Any, tmp_path: Path) -> None:
    th = fleet_factory(["h1", "h2"])
    p = make_project(th, tmp_path)
    p.inventory({"h1": p.host_vars("h1"), "h2": p.host_vars("h2")})
    cert, key = self_signed(tmp_path, th.gateway)
    for host, zone in ZONES.items():
        on_target(th, host, ["sh", "-c", f"echo {zone} > /etc/timezone && ln -sf /usr/share/zoneinfo/{zone} /etc/localtime"])
        on_target(th, host, ["sh", "-c", f"mkdir -p {Path(DEFAULT_CA_FILE).parent} && cat > {DEFAULT_CA_FILE}"],
                  cert.read_text())
    with contextlib.ExitStack() as servers:
        hc = in_netns(th.ctl_netns_path, lambda: servers.enter_context(fake_healthchecks(th.gateway, (cert, key))))
        p.write("deployer.yml", declaration(hc.url))
        p.extra_env.update(HC_API_KEY=API_KEY, HC_PING_KEY=PING_KEY, SSL_CERT_FILE=str(cert))

        applied = p.deployer("apply", "dev", "--yes", "--json")
        assert applied.exit_code == 0, applied
        slugs = [f"demo-dev-{job}-{host}" for job in ("backup", "report") for host in ("h1", "h2")]
        assert actions(applied.stdout) == dict.fromkeys(slugs, "created")
        assert {c["slug"]: c["tz"] for c in hc.checks} == {
            "demo-dev-backup-h1": "Europe/Paris", "demo-dev-report-h1": "Europe/Paris",
            # the probed zone, as healthchecks stores it (hc/lib/tz.py renames Europe/Kiev)
            "demo-dev-backup-h2": "Europe/Kyiv", "demo-dev-report-h2": "Europe/Kyiv"}
        assert all(c["schedule"] in ("0 3 * * *", "0 * * * *") for c in hc.checks)
        # The legacy name is not a difference: a second apply lists and sends nothing else.
        calls = len(hc.calls)
        again = p.deployer("apply", "dev", "--yes", "--json")
        assert again.exit_code == 0 and actions(again.stdout) == dict.fromkeys(slugs, "unchanged"), again
        assert [m for m, _ in hc.calls[calls:]] == ["GET"]

        ran = p.deployer("run", "dev", "backup", "-H", "h2")
        assert ran.exit_code == 0, ran
        assert [(ping.slug, ping.kind, ping.client) for ping in hc.pings] == [
            ("demo-dev-backup-h2", "start", th.host("h2").ip), ("demo-dev-backup-h2", "success", th.host("h2").ip)]

        destroyed = p.deployer("destroy", "dev", "--limit", "h2", "--yes", "--json")
        assert destroyed.exit_code == 0, destroyed
        assert actions(destroyed.stdout) == {"demo-dev-backup-h2": "paused", "demo-dev-report-h2": "paused"}
        assert {c["slug"]: c["status"] for c in hc.checks} == {
            "demo-dev-backup-h1": "new", "demo-dev-report-h1": "new", "demo-dev-backup-h2": "paused",
            "demo-dev-report-h2": "paused"}
        assert "demo-dev" in p.crontab("h1") and "demo-dev" not in p.crontab("h2")
        for result in (applied, again, ran, destroyed):
            assert API_KEY not in result.stdout + result.stderr and PING_KEY not in result.stdout + result.stderr


def actions(stdout: str) -> dict[str, str]:
    return {c["slug"]: c["action"] for c in json.loads(stdout)["healthchecks"]["checks"]}


def on_target(th: TestHosts, host: str, argv: list[str], text: str | None = None) -> str:
    """``argv`` run as root on ``host`` (entering its namespaces); its stdout."""
    done = th.exec_on(host, argv, input=text)
    assert done.returncode == 0, f"{shlex.join(argv)} on {host}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return str(done.stdout)
