"""deployer/remote/metrics.py's files read by the real prometheus-node-exporter (Debian's):
its textfile collector serves them on a loopback port, scraped over HTTP here."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployer.remote import metrics
from tests.alerts.servers import node_exporter, scrape

pytestmark = pytest.mark.alerts

LABELS = 'env="prod",job="backup",project="shop"'  # node_exporter sorts labels by name


def test_node_exporter_serves_what_the_metrics_file_says(tmp_path: Path) -> None:
    folder = tmp_path / "textfile"
    folder.mkdir()
    written = metrics.JobMetrics("shop", "prod", "backup", last_run=1700000000.25, last_success=1699990000.0,
                                 last_duration=12.5, last_exit_code=1, consecutive_failures=3,
                                 next_run=metrics.next_run("0 3 * * *", "Europe/Paris", 1700000000.0), running=False)
    assert metrics.write(str(folder), written) is None
    odd = metrics.JobMetrics("shop", 'pr"od\\x', "line\nbreak", last_run=1.0, running=True)  # label values escaped
    assert metrics.write(str(folder), odd) is None
    with node_exporter(folder) as url:
        samples = scrape(url)
        assert samples[f"deployer_job_last_run_timestamp_seconds{{{LABELS}}}"] == 1700000000.25
        assert samples[f"deployer_job_last_success_timestamp_seconds{{{LABELS}}}"] == 1699990000.0
        assert samples[f"deployer_job_last_duration_seconds{{{LABELS}}}"] == 12.5
        assert samples[f"deployer_job_last_exit_code{{{LABELS}}}"] == 1
        assert samples[f"deployer_job_consecutive_failures{{{LABELS}}}"] == 3
        assert samples[f"deployer_job_next_run_timestamp_seconds{{{LABELS}}}"] == 1700013600.0  # 2023-11-15 03:00 in Paris, 02:00 UTC
        assert samples[f"deployer_job_running{{{LABELS}}}"] == 0
        assert samples['deployer_job_running{env="pr\\"od\\\\x",job="line\\nbreak",project="shop"}'] == 1
        assert samples["node_textfile_scrape_error"] == 0  # node_exporter read every file

        # a run starts: the file is replaced at once, never read half-written
        assert metrics.write(str(folder), metrics.JobMetrics(**{**written.__dict__, "running": True})) is None
        assert scrape(url)[f"deployer_job_running{{{LABELS}}}"] == 1
    assert {p.name for p in folder.iterdir()} == {"deployer_shop_prod_backup.prom", 'deployer_shop_pr"od\\x_line\nbreak.prom'}
