"""The healthchecks checks an environment should have (core/healthchecks.py): slugs, fields, differences. Pure."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from deployer.config.project import EnvironmentConfig, HealthchecksSite, Job, JobAlerts, Secret, Settings
from deployer.core.healthchecks import SLUG_MAX, check_slug, check_spec, cron_schedule, differences, has_check, ping_url, release_spec, same_time

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SITE = HealthchecksSite("https://healthchecks.io", Secret(env="K"), "https://hc-ping.com", Secret(env="P"))


def env(*jobs: Job, site: HealthchecksSite | None = SITE) -> EnvironmentConfig:
    return EnvironmentConfig("prod", Path("inv"), "inv", Settings(), jobs, healthchecks=site)


def test_a_slug_per_job_and_host_made_of_names_alone() -> None:
    assert check_slug("shop", "prod", "backup", "db1") == "shop-prod-backup-db1"
    assert check_slug("shop", "prod", "backup", "DB1.example.org") == "shop-prod-backup-db1-example-org"
    long_a = check_slug("p" * 32, "e" * 32, "j" * 64, "host-a")
    long_b = check_slug("p" * 32, "e" * 32, "j" * 64, "host-b")
    assert len(long_a) == len(long_b) == SLUG_MAX and long_a != long_b  # cut, and told apart by a digest


def test_the_ping_url_is_the_slug_url_with_the_ping_key() -> None:
    assert ping_url("https://hc-ping.com/", "k3y", "shop-prod-backup-db1") == "https://hc-ping.com/k3y/shop-prod-backup-db1"


def test_which_jobs_get_a_check() -> None:
    plain = Job(id="backup", schedule="0 3 * * *")
    own = Job(id="own", schedule="0 3 * * *", alerts=JobAlerts(ping="https://hc-ping.com/1234"))
    boot = Job(id="boot", schedule="@reboot")
    e = env(plain, own, boot)
    assert [has_check(j, e) for j in (plain, own, boot)] == [True, False, False]
    assert not has_check(plain, env(plain, site=None))


def test_the_check_takes_the_jobs_schedule_the_hosts_zone_and_the_derived_grace() -> None:
    job = Job(id="report", schedule="@daily", description="Daily report", timeout=600)
    spec = check_spec("shop", "prod", job, "web1", "Europe/Paris", NOW)
    assert (spec.slug, spec.schedule, spec.tz, spec.grace) == ("shop-prod-report-web1", "0 0 * * *", "Europe/Paris", 720)
    assert spec.tags == "deployer shop prod" and spec.desc.startswith("Daily report\n")
    short = check_spec("shop", "prod", Job(id="x", schedule="* * * * *", alerts=JobAlerts(grace=30)), "h", "UTC", NOW)
    assert short.grace == 60  # the API's least grace
    assert cron_schedule("@hourly") == "0 * * * *" and cron_schedule("*/5 * * * *") == "*/5 * * * *"


def test_differences_name_the_fields_that_moved() -> None:
    spec = check_spec("shop", "prod", Job(id="backup", schedule="0 3 * * *"), "db1", "UTC", NOW)
    listed = {**spec.fields(), "slug": spec.slug, "status": "up", "n_pings": 4, "channels": "a,b"}
    assert differences(spec, listed) == ()
    assert differences(spec, {**listed, "schedule": "0 4 * * *", "tz": "Europe/Riga"}) == ("schedule", "tz")
    simple = {k: v for k, v in listed.items() if k not in ("schedule", "tz")} | {"timeout": 86400}
    assert differences(spec, simple) == ("schedule", "tz")  # a simple check becomes a cron one


def test_a_zone_the_api_renamed_is_the_same_zone() -> None:
    # healthchecks stores Europe/Kiev as Europe/Kyiv (hc/lib/tz.py legacy_timezones): not a difference.
    spec = check_spec("shop", "prod", Job(id="backup", schedule="0 3 * * *"), "db1", "Europe/Kiev", NOW)
    listed = {**spec.fields(), "tz": "Europe/Kyiv"}
    assert differences(spec, listed, NOW) == ()
    for legacy, renamed in [("US/Eastern", "America/New_York"), ("CET", "Europe/Brussels"), ("UCT", "Etc/UTC"),
                            ("Asia/Calcutta", "Asia/Kolkata"), ("Iceland", "Africa/Abidjan")]:
        assert same_time(legacy, renamed, NOW), (legacy, renamed)
    # Another zone is a difference, DST or not; so is a name the tz database does not know, or a path.
    assert differences(spec, {**listed, "tz": "Europe/Paris"}, NOW) == ("tz",)
    # Two zones that keep the same time count as one (the check is due at the same instants).
    assert same_time("Europe/London", "Europe/Lisbon", NOW)
    assert not same_time("America/Phoenix", "America/Denver", NOW)  # Denver keeps DST, Phoenix does not
    assert not same_time("Europe/Kiev", "Mars/Olympus", NOW) and not same_time("Europe/Kiev", "../../etc/passwd", NOW)
    assert differences(spec, {**listed, "tz": 3}, NOW) == ("tz",)


def test_a_kept_releases_job_gives_its_check_when_it_pings_it() -> None:
    # What the probe read of a release kept on the host: the target's word, each value checked.
    kept = {"schedule": "@daily", "timeout": 600, "description": "Daily report", "grace": None,
            "ping_slug": "shop-prod-report-web1"}
    spec = release_spec("shop", "prod", "report", kept, "web1", "Europe/Paris", NOW)
    assert spec == check_spec("shop", "prod", Job(id="report", schedule="@daily", description="Daily report", timeout=600),
                              "web1", "Europe/Paris", NOW)
    assert release_spec("shop", "prod", "report", {**kept, "grace": 900}, "web1", "UTC", NOW).grace == 900  # type: ignore[union-attr]
    for bad in ({"ping_slug": "shop-prod-report-web2"}, {"ping_slug": None}, {"schedule": "@reboot"},
                {"schedule": "61 * * * *"}, {"schedule": 5}, {"timeout": "600"}, {"timeout": True}, {"timeout": 0},
                {"grace": "15m"}):
        assert release_spec("shop", "prod", "report", {**kept, **bad}, "web1", "UTC", NOW) is None, bad
