"""The run wrapper's alerting: what one run tells its channels, its check and node_exporter. Runs on the target.

Standard library only (plus deployer.remote's own target modules), bundled into the
release's ``run`` with the wrapper. The wrapper calls ``load`` (None: the job has no
``alerts/<id>.json``), ``RunAlerts.started`` before the job starts and ``RunAlerts.ended``
once its outcome is known, before the ledger line is written: the deliveries go into that
line. Nothing here raises into the wrapper, and every channel is bounded by the config's
timeout (alerts.py): alerting never changes the job's exit code or outcome.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from deployer.remote import alerts, metrics
from deployer.remote.hostzone import target_timezone
from deployer.remote.safefs import read_bytes

if TYPE_CHECKING:
    from deployer.remote.messages import AlertConfigFile, AlertDelivery, JobSpecFile

CONFIG_LIMIT = 1024 * 1024
STATE_FILE = "alerts.json"  # in the job's state folder, beside the ledger


def load(release: str, job_id: str) -> tuple[AlertConfigFile | None, str | None]:
    """The job's alert config (root's or ours, read without following links) and a problem, if any."""
    path = os.path.join(release, "alerts", job_id + ".json")
    try:
        data = read_bytes(path, CONFIG_LIMIT, owners={0, os.geteuid()})
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, f"alert config {path} cannot be read: {exc.strerror or exc}"
    try:
        config = json.loads(data.decode("utf-8"))
    except ValueError:
        return None, f"alert config {path} is not JSON"
    if not isinstance(config, dict):
        return None, f"alert config {path} is not a JSON object"
    return config, None  # type: ignore[return-value]  # deployer wrote it (core/alertconfig.py)


def secret_values(env: dict[str, str], config: AlertConfigFile) -> list[str]:
    """What an output tail must not show: the job's secret env values and the config's own secrets."""
    found = [env.get(name, "") for name in config.get("secret_env") or []]
    for channel in config.get("channels") or []:
        smtp = channel.get("smtp")
        if smtp and smtp.get("password"):
            found.append(str(smtp["password"]))
        found.extend(str(v) for v in (channel.get("headers") or {}).values())
        found.extend(str(u) for u in channel.get("urls") or [])
    if config.get("ping"):
        found.append(str(config["ping"]))
    return [s for s in found if s]


class RunAlerts:
    """One run's alerting: a start ping, then the decision, messages, state, finish ping and metrics."""

    def __init__(self, config: AlertConfigFile, spec: JobSpecFile, run_id: str, host: str) -> None:
        self.config = config
        self.spec = spec
        self.run_id = run_id
        self.host = host
        self.deliveries: list[AlertDelivery] = []
        self.errors: list[str] = []
        self._start_ping: list[alerts.Delivery] = []  # for the state's last delivery per channel

    def started(self) -> None:
        """Before the job starts: the metrics file says a run is going on (``running`` 1, the
        rest as the last run left it), then healthchecks' ``/start`` (the check then measures
        the run and knows it is going on)."""
        try:
            if self.config.get("metrics_dir"):
                state, _problem = alerts.read_state(self._state_path())  # a problem is said when the run ends
                self._metrics(state, time.time(), running=True)
            start = alerts.ping(self.config, "start", self.run_id)
            if start is not None:
                self._start_ping.append(start)
                self.deliveries.append(start.record())  # type: ignore[arg-type]  # the same fields
        except Exception as exc:  # noqa: BLE001 - alerting never stops a run
            self.errors.append(f"start: {type(exc).__name__}: {exc}")

    def _state_path(self) -> str:
        return os.path.join(self.spec["state_dir"], STATE_FILE)

    def ended(self, outcome: str, exit_code: int | None, start: float, end: float, output: bytes,
              secrets: Sequence[str]) -> None:
        """Everything the run's end calls for; what failed is kept in ``deliveries`` and ``errors``."""
        try:
            self._ended(outcome, exit_code, start, end, output, secrets)
        except Exception as exc:  # noqa: BLE001 - alerting never changes the job's outcome
            self.errors.append(f"alerting: {type(exc).__name__}: {exc}")

    def _ended(self, outcome: str, exit_code: int | None, start: float, end: float, output: bytes,
               secrets: Sequence[str]) -> None:
        tail = alerts.tail(output, secrets)
        event: dict[str, Any] = {"outcome": outcome, "at": end, "host": self.host, "run_id": self.run_id,
                                 "exit_code": exit_code, "start": start, "duration": round(end - start, 3),
                                 "output_tail": tail}
        state_path = self._state_path()
        # The watchdog writes the state too: one read-modify-write at a time. Not had within
        # its short wait, the run goes on without it (a run is never held up by alerting).
        with alerts.state_lock(self.spec["state_dir"], alerts.LOCK_WAIT) as problem:
            if problem:
                self.errors.append(problem)
            state, problem = alerts.read_state(state_path)
            if problem:
                self.errors.append(problem)
            decision = alerts.decide(self.config, state, event)
            problem = alerts.write_state(state_path, decision.state)
            if problem:
                self.errors.append(problem)
        done: list[alerts.Delivery] = []
        if decision.messages:  # sent once the lock is released: a slow channel holds up no one else
            done += alerts.send(self.config, decision.messages, self.host)
        # exit code None: skipped-locked (the run that holds the lock pings its own end), or a
        # crashed run found by a later one (its end is not known)
        if exit_code is not None:
            body = "\n".join(tail).encode()
            finish = alerts.ping(self.config, exit_code, self.run_id, body)
            done += [finish] if finish is not None else []
        self.deliveries.extend(d.record() for d in done)  # type: ignore[misc]  # the same fields
        delivered = [*self._start_ping, *done]
        if delivered:
            # What became of them, in a second short turn under the lock: the channels that took
            # the incident's message are told it (the others are tried again by a later run),
            # and status and verify show each channel's last delivery.
            with alerts.state_lock(self.spec["state_dir"], alerts.LOCK_WAIT) as problem:
                if problem:
                    self.errors.append(problem)
                state, problem = alerts.read_state(state_path)
                alerts.note_deliveries(state, delivered, end, decision.messages)
                problem = problem or alerts.write_state(state_path, state)
                if problem:
                    self.errors.append(problem)
            decision.state = state
        if self.config.get("metrics_dir"):
            self._metrics(decision.state, end)

    def _metrics(self, state: dict[str, Any], now: float, running: bool = False) -> None:
        spec = self.spec
        m = metrics.JobMetrics(
            project=spec["project"], env=spec["env"], job=spec["id"],
            last_run=state.get("last_run"), last_success=state.get("last_success"),
            last_duration=state.get("last_duration"), last_exit_code=state.get("last_exit_code"),
            consecutive_failures=int(state.get("consecutive_failures") or 0),
            next_run=metrics.next_run(spec["schedule"], target_timezone(), now), running=running)
        problem = metrics.write(str(self.config["metrics_dir"]), m)
        if problem:
            self.errors.append(problem)
