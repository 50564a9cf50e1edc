"""The hard run outcomes, told for real and shown by status and verify: a job that hangs past
its timeout, a run whose wrapper is killed with SIGKILL, ``after: 3``, a job failing over and
over inside its quiet period, and a deploy by an ordinary user. As tests/alerts/test_run_alerts.py:
the real wrapper (through `deployer run`, or started as cron starts it), a real SMTP relay and
HTTP server on the loopback, the real node_exporter scraping the metrics file."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.alerts.servers import Relay, Web, channels_yaml, node_exporter, scrape, smtp_relay, web_server
from tests.conftest import CRON_PYTHON, TEST_USER, Project

pytestmark = [pytest.mark.alerts, pytest.mark.cron]

HOME = Path("/var/lib/deployer/demo-dev")
SECRETS = {"SMTP_PASSWORD": "relay-password-1", "HOOK_TOKEN": "Bearer hook-7d8e9f"}
LABELS = 'env="dev",job="flaky",project="demo"'
# The job does what its mode file says: exit with that code, hang (past its timeout), or wait
# for a file to appear and then succeed.
TASK = """\
import os, sys, time
mode = open(sys.argv[1]).read().strip()
print("mode", mode, flush=True)
if mode == "hang":
    time.sleep(120)
if mode.startswith("wait:"):
    while not os.path.exists(mode[5:]):
        time.sleep(0.05)
    sys.exit(0)
print("giving up with", mode)
sys.exit(int(mode))
"""


@pytest.fixture
def shared() -> Iterator[Path]:
    """A folder the test user can read (the modes, the relay's CA): pytest's own are root's alone."""
    folder = Path(tempfile.mkdtemp(prefix="deployer-outcomes-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


def declaration(shared: Path, relay: Relay, web: Web, *, jobs: dict[str, str], timeout: str = "1m",
                run_as: bool = True, metrics_dir: Path | None = None) -> str:
    """Project demo: channels oncall (mail) and team (webhook); each job runs tasks/flaky.py
    with its own mode file, ``jobs`` giving each its alerts' rules (YAML flow mapping)."""
    metrics = f"  metrics: {{dir: {metrics_dir}}}\n" if metrics_dir else ""
    declared = "".join(f"""\
  {name}:
    script: tasks/flaky.py
    args: ["{shared / name}"]
    schedule: "0 3 * * *"
    alerts: {{rules: {rules}}}
""" for name, rules in jobs.items())
    return f"""\
project: demo
defaults:
{f"  run_as: {TEST_USER}" if run_as else ""}
  timeout: {timeout}
alerts:
{channels_yaml("127.0.0.1", relay.port, relay.ca_file, web.url + "/hook")}
{metrics}jobs:
{declared}environments:
  dev:
    inventory: inventories/dev
"""


class Outcomes:
    """The deployed project, its mode files and what the channels received."""

    def __init__(self, project: Project, shared: Path, relay: Relay, web: Web) -> None:
        self.project, self.shared, self.relay, self.web = project, shared, relay, web

    def deploy(self, text: str) -> None:
        self.project.write("tasks/flaky.py", TASK)
        self.project.declare(text)
        result = self.project.deployer("apply", "dev", "--yes", env=SECRETS)
        assert result.exit_code == 0, result

    def mode(self, job: str, mode: str) -> None:
        path = self.shared / job
        path.write_text(mode)
        path.chmod(0o644)

    def run(self, job: str, mode: str) -> int:
        self.mode(job, mode)
        return self.project.deployer("run", "dev", job, env=SECRETS).exit_code

    def mails(self) -> list[tuple[str, str]]:
        """(event, subject) of each mail the relay received."""
        return [(str(m["X-Deployer-Event"]), str(m["Subject"])) for m in self.relay.messages]

    def hooks(self, answered: int | None = None) -> list[tuple[str, str]]:
        """(event, job) of each webhook post (``answered``: of those the server answered with it)."""
        bodies = [json.loads(r.body) for r in self.web.requests if r.path == "/hook" and answered in (None, r.status)]
        return [(b["event"], b["job"]) for b in bodies]

    def hook_bodies(self, answered: int = 200) -> list[dict[str, Any]]:
        return [json.loads(r.body) for r in self.web.requests if r.path == "/hook" and r.status == answered]

    def json(self, *args: str) -> dict[str, Any]:
        result = self.project.deployer(*args, "--json", env=SECRETS)
        try:
            return dict(json.loads(result.stdout))
        except ValueError:
            raise AssertionError(f"not JSON:\n{result}") from None


@pytest.fixture
def outcomes(project: Project, user_crontab: str, shared: Path) -> Iterator[Outcomes]:
    with smtp_relay(shared) as relay, web_server() as web:
        (shared / "relay.pem").chmod(0o644)
        yield Outcomes(project, shared, relay, web)


def ledger(job: str, home: Path = HOME) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (home / "state" / job / "ledger.jsonl").read_text().splitlines()]


def wait_for(check: Callable[[], object], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def gone(pid: int) -> bool:
    """Ended: no such process, or a zombie nobody reaped yet."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def alert_checks(report: dict[str, Any], job: str) -> list[tuple[str, str]]:
    return [(c["status"], c["detail"]) for c in report["hosts"]["localhost"]["checks"]
            if c["name"] == "alerts" and c["job"] == job]


def test_a_hung_job_is_told_once_as_a_timeout_then_its_recovery(outcomes: Outcomes, shared: Path) -> None:
    host = "localhost"  # the inventory's name, not the hostname
    outcomes.deploy(declaration(shared, outcomes.relay, outcomes.web, jobs={"flaky": "{}"}, timeout="2s"))
    started = time.monotonic()
    assert outcomes.run("flaky", "hang") == 124  # killed at its timeout
    assert time.monotonic() - started < 30
    assert outcomes.run("flaky", "hang") == 124
    [(event, subject)] = outcomes.mails()
    assert event == "timeout" and subject.startswith(f"[demo/dev] flaky timed out on {host} (killed after 2.")
    assert outcomes.hooks() == [("timeout", "flaky")]

    status = outcomes.json("status", "dev")["jobs"][0]["alerts"]
    assert status["incident"]["event"] == "timeout" and status["incident"]["told"] is True
    assert status["last_alert"]["event"] == "timeout" and status["last_alert"]["channels"] == ["oncall", "team"]
    assert status["consecutive_failures"] == 2 and status["channel_errors"] == [] and status["silenced_until"]
    checks = alert_checks(outcomes.json("verify", "dev"), "flaky")
    assert len(checks) == 1 and checks[0][0] == "warn"
    assert checks[0][1].startswith("open incident: timeout since ") and "told: timeout " in checks[0][1]

    assert outcomes.run("flaky", "0") == 0
    assert [event for event, _ in outcomes.mails()] == ["timeout", "recovered"]
    assert outcomes.hooks() == [("timeout", "flaky"), ("recovered", "flaky")]
    assert [e["outcome"] for e in ledger("flaky")] == ["timeout", "timeout", "success"]
    verify = outcomes.project.deployer("verify", "dev", env=SECRETS)
    assert "pass alerts flaky no open incident; last alert: recovered " in verify.stdout, verify
    assert " to oncall, team; quiet until " in verify.stdout


def test_a_killed_wrapper_is_told_once_as_a_crash_and_the_running_gauge_says_it_ran(
        outcomes: Outcomes, shared: Path, tmp_path: Path) -> None:
    textfile = tmp_path / "textfile"
    textfile.mkdir()
    outcomes.deploy(declaration(shared, outcomes.relay, outcomes.web, jobs={"flaky": "{}"}, metrics_dir=textfile))
    go = shared / "go"
    outcomes.mode("flaky", f"wait:{go}")
    with node_exporter(textfile) as url:
        # Started as root's cron starts it; the job waits for `go`.
        wrapper = subprocess.Popen([CRON_PYTHON, str(HOME / "current/run"), "flaky"], start_new_session=True, cwd="/",
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        running = HOME / "state/flaky/running"
        wait_for(lambda: running.is_dir() and any(running.iterdir()))
        [marker] = list(running.iterdir())
        job_pid = json.loads(marker.read_text())["pid"]
        assert scrape(url)[f"deployer_job_running{{{LABELS}}}"] == 1  # written before the job started
        os.kill(wrapper.pid, signal.SIGKILL)  # the wrapper alone, for real: no ledger line, the marker left
        wrapper.wait()
        go.touch()
        wait_for(lambda: gone(job_pid))
        assert not (HOME / "state/flaky/ledger.jsonl").exists() and marker.exists()
        assert scrape(url)[f"deployer_job_running{{{LABELS}}}"] == 1  # nothing was left to say otherwise
        assert outcomes.mails() == []
        verify = outcomes.project.deployer("verify", "dev", env=SECRETS)
        assert f"never ended and its process {job_pid} is gone (crashed)" in verify.stdout, verify

        assert outcomes.run("flaky", "0") == 0  # the next run records the crash, tells it, then recovers
        samples = scrape(url)
        assert samples[f"deployer_job_running{{{LABELS}}}"] == 0
        assert samples[f"deployer_job_last_exit_code{{{LABELS}}}"] == 0
    host = "localhost"  # the inventory's name, not the hostname
    assert outcomes.mails()[0] == ("crash", f"[demo/dev] flaky crashed on {host} (its run ended without a record)")
    assert [event for event, _ in outcomes.mails()] == ["crash", "recovered"]
    assert outcomes.hooks() == [("crash", "flaky"), ("recovered", "flaky")]
    crashed, success = ledger("flaky")
    assert crashed["outcome"] == "crashed" and crashed["run_id"] == marker.stem and crashed["exit_code"] is None
    assert sorted((a["channel"], a["event"], a["ok"]) for a in crashed["alerts"]) == [
        ("oncall", "crash", True), ("team", "crash", True)]
    assert success["outcome"] == "success" and not marker.exists()

    assert outcomes.run("flaky", "0") == 0
    assert [event for event, _ in outcomes.mails()] == ["crash", "recovered"]  # once
    assert [e["outcome"] for e in ledger("flaky")] == ["crashed", "success", "success"]


def test_after_3_and_a_job_failing_within_its_quiet_period(outcomes: Outcomes, shared: Path) -> None:
    outcomes.deploy(declaration(shared, outcomes.relay, outcomes.web,
                                jobs={"flaky": "{after: 3}", "flappy": "{quiet: 1h}"}))
    assert outcomes.run("flaky", "3") == 3
    assert outcomes.run("flaky", "3") == 3
    assert outcomes.mails() == []
    status = outcomes.json("status", "dev", "flaky")["jobs"][0]["alerts"]
    assert status["incident"] is None and status["consecutive_failures"] == 2 and status["last_alert"] is None
    assert outcomes.run("flaky", "3") == 3  # the third in a row opens the incident
    assert [event for event, _ in outcomes.mails()] == ["failure"]
    assert "Consecutive failed runs: 3" in outcomes.relay.messages[0].get_content()
    assert outcomes.run("flaky", "3") == 3
    assert outcomes.run("flaky", "0") == 0
    assert [(e, s.split(" on ")[0]) for e, s in outcomes.mails()] == [("failure", "[demo/dev] flaky failed"),
                                                                      ("recovered", "[demo/dev] flaky recovered")]

    del outcomes.relay.messages[:]
    del outcomes.web.requests[:]
    # Failing run after run, recovering now and then: one message for the first incident and
    # its recovery; the next incidents fall inside the quiet period and are not told.
    for code in ("1", "1", "1", "0", "1", "0", "1", "1"):
        assert outcomes.run("flappy", code) == int(code)
    assert [event for event, _ in outcomes.mails()] == ["failure", "recovered"]
    assert outcomes.hooks() == [("failure", "flappy"), ("recovered", "flappy")]
    checks = alert_checks(outcomes.json("verify", "dev"), "flappy")
    assert len(checks) == 1 and checks[0][0] == "warn"
    assert checks[0][1].startswith("open incident: failure since ")
    assert "(2 failed runs in a row), not told: the quiet period holds it until " in checks[0][1]
    status = outcomes.json("status", "dev", "flappy")["jobs"][0]["alerts"]
    assert status["incident"]["told"] is False and status["untold"] == 2 and status["silenced_until"]
    table = outcomes.project.deployer("status", "dev", "flappy", env=SECRETS)
    assert "failure since " in table.stdout and ", not told; last recovered " in table.stdout, table


def test_a_dead_channel_is_a_warning_of_verify_not_a_failure_of_the_job(outcomes: Outcomes, shared: Path) -> None:
    outcomes.deploy(declaration(shared, outcomes.relay, outcomes.web, jobs={"flaky": "{}"}))
    outcomes.web.status = 500  # the webhook's server fails, the relay works
    assert outcomes.run("flaky", "0") == 0
    assert outcomes.run("flaky", "2") == 2
    report = outcomes.json("verify", "dev")
    checks = alert_checks(report, "flaky")
    assert [s for s, d in checks if d.startswith("the last delivery to team failed ")
            and d.endswith(" ago (failure): HTTP 500 Internal Server Error")] == ["warn"], checks
    errors = report["hosts"]["localhost"]["alerts"]["flaky"]["channel_errors"]
    assert [(e["channel"], e["event"], e["error"]) for e in errors] == [("team", "failure", "HTTP 500 Internal Server Error")]
    assert report["hosts"]["localhost"]["alerts"]["flaky"]["last_alert"]["failed"] == ["team"]
    outcomes.web.status = 200
    assert outcomes.run("flaky", "0") == 0  # the recovery goes to the channel that was told only
    assert [event for event, _ in outcomes.mails()] == ["failure", "recovered"]
    assert outcomes.hooks(answered=200) == []
    checks = alert_checks(outcomes.json("verify", "dev"), "flaky")  # team's last delivery, the failure, failed: still said
    assert [s for s, d in checks if d.startswith("the last delivery to team failed ")] == ["warn"], checks


def test_a_webhook_that_failed_gets_the_failure_from_the_next_failing_run_once(outcomes: Outcomes, shared: Path) -> None:
    host = "localhost"  # the inventory's name, not the hostname
    # quiet 1s: a channel owed a message is tried again by the next failing run at least 5 minutes
    # after its last try, or after the quiet period if that is shorter
    outcomes.deploy(declaration(shared, outcomes.relay, outcomes.web, jobs={"flaky": "{quiet: 1s}"}))
    outcomes.web.status = 500
    assert outcomes.run("flaky", "2") == 2
    assert outcomes.mails() == [("failure", f"[demo/dev] flaky failed on {host} (exit 2)")]
    assert outcomes.hooks(answered=200) == [] and set(outcomes.hooks(answered=500)) == {("failure", "flaky")}
    incident = outcomes.json("status", "dev")["jobs"][0]["alerts"]["incident"]
    assert (incident["told"], incident["told_to"], incident["owed"], incident["tries"]) == (True, ["oncall"], ["team"], 1)
    checks = alert_checks(outcomes.json("verify", "dev"), "flaky")
    assert checks[0][1].startswith("open incident: failure since ") and "told: failure " in checks[0][1]
    assert "; owed to team: tried again by the job's next failing run" in checks[0][1], checks

    outcomes.web.status = 200
    assert outcomes.run("flaky", "3") == 3  # the next failing run: to the webhook alone, once
    assert [event for event, _ in outcomes.mails()] == ["failure"]
    [repeat] = outcomes.hook_bodies()
    assert (repeat["event"], repeat["attempt"], repeat["exit_code"], repeat["consecutive_failures"]) == ("failure", 2, 3, 2)
    assert repeat["text"].startswith(f"[demo/dev] flaky failed on {host} (exit 3) (repeated: incident since ")
    assert repeat["text"].endswith(", 1 failed run since)")
    assert sorted((a["channel"], a["event"], a["ok"]) for a in ledger("flaky")[-1]["alerts"]) == [("team", "failure", True)]
    assert outcomes.run("flaky", "3") == 3  # told to every channel: nothing more
    assert [event for event, _ in outcomes.mails()] == ["failure"] and outcomes.hooks(answered=200) == [("failure", "flaky")]
    incident = outcomes.json("status", "dev")["jobs"][0]["alerts"]["incident"]
    assert (incident["told_to"], incident["owed"], incident["tries"]) == (["oncall", "team"], [], 2)

    assert outcomes.run("flaky", "0") == 0
    assert [event for event, _ in outcomes.mails()] == ["failure", "recovered"]
    assert outcomes.hooks(answered=200) == [("failure", "flaky"), ("recovered", "flaky")]
    [(status, detail)] = alert_checks(outcomes.json("verify", "dev"), "flaky")
    assert status == "pass" and detail.startswith("no open incident; last alert: recovered ") and detail.endswith(" to oncall, team")


def test_a_channel_down_for_an_incident_never_gets_its_recovery(outcomes: Outcomes, shared: Path) -> None:
    # The default quiet period (1h): a channel owed a message would be tried again 5 minutes
    # later; the jobs recover sooner.
    outcomes.deploy(declaration(shared, outcomes.relay, outcomes.web, jobs={"flaky": "{}", "lonely": "{}"}))
    outcomes.relay.down()  # not listening: the connection is refused
    outcomes.web.status = 500
    assert outcomes.run("lonely", "1") == 1  # every channel dead: told to nobody
    outcomes.web.status = 200
    assert outcomes.run("flaky", "2") == 2  # the relay alone dead
    assert outcomes.mails() == [] and outcomes.hooks(answered=200) == [("failure", "flaky")]
    report = outcomes.json("verify", "dev")
    flaky, lonely = (alert_checks(report, job) for job in ("flaky", "lonely"))
    assert flaky[0][1].startswith("open incident: failure since ") and "told: failure " in flaky[0][1]
    assert "; owed to oncall: tried again by the job's next failing run after " in flaky[0][1], flaky
    assert len(flaky) == 2 and flaky[1][1].startswith("the last delivery to oncall failed "), flaky
    assert flaky[1][1].endswith(" ago (failure): Connection refused")
    assert "not told: its message reached no channel (1 try); owed to oncall, team: tried again by the job's next failing " \
           "run after " in lonely[0][1], lonely
    state = report["hosts"]["localhost"]["alerts"]["lonely"]
    assert state["incident"]["told"] is False and state["silenced_until"] is None  # no quiet period: nothing was told

    outcomes.relay.up()
    assert outcomes.run("flaky", "0") == 0
    assert outcomes.run("lonely", "0") == 0
    assert outcomes.mails() == []  # the relay never got the failure: it gets no recovery of it
    assert outcomes.hooks(answered=200) == [("failure", "flaky"), ("recovered", "flaky")]  # lonely's: nothing
    assert [a["channel"] for a in ledger("flaky")[-1]["alerts"]] == ["team"]
    assert not ledger("lonely")[-1].get("alerts")  # nothing sent
    for job in ("flaky", "lonely"):
        state = outcomes.json("status", "dev", job)["jobs"][0]["alerts"]
        assert state["incident"] is None and "oncall" in [e["channel"] for e in state["channel_errors"]]


def test_a_deploy_by_an_ordinary_user_tells_and_keeps_its_state_in_its_own_folder(
        outcomes: Outcomes, shared: Path, test_user: pwd.struct_passwd) -> None:
    outcomes.project.write("inventories/dev/hosts.yml", f"""\
        all:
          hosts:
            localhost:
              ansible_connection: local
              ansible_become: true
              ansible_become_user: {TEST_USER}
        """)
    outcomes.deploy(declaration(shared, outcomes.relay, outcomes.web, jobs={"flaky": "{}"}, run_as=False))
    home = Path(test_user.pw_dir) / ".local/share/deployer/demo-dev"
    assert outcomes.run("flaky", "4") == 4
    assert outcomes.run("flaky", "0") == 0
    assert [event for event, _ in outcomes.mails()] == ["failure", "recovered"]
    assert outcomes.hooks() == [("failure", "flaky"), ("recovered", "flaky")]
    state = home / "state/flaky/alerts.json"
    st = state.stat()
    assert (st.st_uid, st.st_mode & 0o777) == (test_user.pw_uid, 0o600)
    assert json.loads(state.read_text())["last_alert"]["event"] == "recovered"
    assert not (HOME / "state/flaky").exists()  # nothing of root's
    assert [e["outcome"] for e in ledger("flaky", home)] == ["failure", "success"]
    status = outcomes.json("status", "dev")["jobs"][0]["alerts"]
    assert status["incident"] is None and status["last_alert"]["event"] == "recovered"
