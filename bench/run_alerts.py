#!/usr/bin/env python3
"""Benchmark: what alerting adds to one run of the release's wrapper (issue 15).

    PYTHONPATH=. python bench/run_alerts.py [--runs 30]

Builds real release folders with deployer's own functions (the bundled ``run``, the job's
``jobs/<id>.json``, its ``alerts/<id>.json``) for a trivial job (``/bin/true``, or
``/bin/false``), and times the whole ``python3 <release>/run JOB`` process from outside,
median of ``--runs`` runs (after 2 warm-ups), in turn so drift hits every case alike:

* ``before``: (with ``--before SRC``, a checkout of the code before the alerts' wiring) that
  code's ``run``, no alerts: what the bundled alerting modules cost a job without alerts;
* ``none``: no alerts file (a release without alerts);
* ``ping+metrics``: a successful run with a healthchecks ping URL (start + end pings to a
  loopback HTTP server), the alert state and the metrics file; no message (nothing to tell);
* ``mail+webhook``: a failing run whose state is reset before each run, so every run opens
  an incident and sends one mail (loopback SMTP relay: STARTTLS, login) and one webhook POST,
  plus both pings, the state and the metrics.

The last line is machine-readable: ``RESULT none=S ping_metrics=S mail_webhook=S`` (seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from deployer.core.release import wrapper_source  # noqa: E402
from tests.alerts.servers import smtp_relay, web_server  # noqa: E402


def release(folder: Path, command: str, config: dict[str, object] | None, run: bytes | None = None) -> Path:
    """A release folder as apply installs it, for one job ``j``."""
    folder.mkdir()
    (folder / "run").write_bytes(run or wrapper_source())
    (folder / "jobs").mkdir()
    state = folder.parent / (folder.name + "-state")
    spec = {"id": "j", "project": "bench", "env": "dev", "description": "", "schedule": "0 3 * * *", "script": None,
            "command": command, "args": [], "run_as": None, "log_file": str(state) + ".log",
            "lock_file": str(state) + ".lock", "state_dir": str(state), "timeout": 60, "concurrency": "forbid",
            "workdir": None, "env_file": None, "retention": {"runs": 10000, "days": 400, "log_size": 10485760, "log_files": 5}}
    (folder / "jobs" / "j.json").write_text(json.dumps(spec))
    if config is not None:
        (folder / "alerts").mkdir()
        path = folder / "alerts" / "j.json"
        path.write_text(json.dumps({"project": "bench", "env": "dev", "job": "j", **config}))
        path.chmod(0o600)
    return folder


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--before", type=Path, help="a checkout of deployer before the wiring (e.g. git archive wip/final)")
    args = parser.parse_args()
    before = None
    if args.before:
        before = subprocess.run([sys.executable, "-c", "import sys; from deployer.core.release import wrapper_source; "
                                 "sys.stdout.buffer.write(wrapper_source())"], cwd=args.before, check=True,
                                capture_output=True, env={**os.environ, "PYTHONPATH": str(args.before)}).stdout
    with tempfile.TemporaryDirectory() as tmp, smtp_relay(Path(tmp)) as relay, web_server() as web:
        root = Path(tmp)
        metrics = root / "textfile"
        metrics.mkdir()
        rules = {"when": ["failure", "timeout", "crash", "late", "recovered"], "after": 1, "quiet": 0}
        common = {"rules": rules, "grace": None, "timeout": 10.0, "retries": 2, "ping": web.url + "/ping/c1",
                  "metrics_dir": str(metrics), "secret_env": []}
        channels = [{"name": "oncall", "type": "mail", "to": ["oncall@example.org"], "sender": None, "sendmail": None,
                     "smtp": {"host": "127.0.0.1", "port": relay.port, "starttls": True, "user": relay.user,
                              "password": relay.password, "ca_file": str(relay.ca_file)}},
                    {"name": "team", "type": "webhook", "url": web.url + "/hook", "headers": {}}]
        cases = {
            **({"before": (release(root / "before", "/bin/true", None, before), None)} if before else {}),
            "none": (release(root / "none", "/bin/true", None), None),
            "ping+metrics": (release(root / "ping", "/bin/true", {**common, "channels": []}), None),
            "mail+webhook": (release(root / "mail", "/bin/false", {**common, "channels": channels}),
                             root / "mail-state" / "alerts.json"),
        }
        times: dict[str, list[float]] = {name: [] for name in cases}
        for i in range(args.runs + 2):
            for name, (folder, reset) in cases.items():
                if reset is not None and reset.exists():
                    reset.unlink()  # a new incident each run: one mail and one webhook each time
                started = time.perf_counter()
                subprocess.run([sys.executable, str(folder / "run"), "j"], check=False, stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                if i >= 2:
                    times[name].append(time.perf_counter() - started)
        mails = len(relay.messages)
        hooks = sum(1 for r in web.requests if r.path == "/hook")
        pings = sum(1 for r in web.requests if r.path.startswith("/ping/"))
    medians = {name: statistics.median(t) for name, t in times.items()}
    for name, t in times.items():
        print(f"{name:14} median {medians[name] * 1000:7.1f} ms  min {min(t) * 1000:7.1f}  max {max(t) * 1000:7.1f}  ({len(t)} runs)")
    print(f"received: {mails} mails, {hooks} webhooks, {pings} pings")
    shown = f"before={medians['before']:.4f} " if "before" in medians else ""
    print(f"RESULT {shown}none={medians['none']:.4f} ping_metrics={medians['ping+metrics']:.4f} "
          f"mail_webhook={medians['mail+webhook']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
