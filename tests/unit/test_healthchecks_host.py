"""Which checks an Ansible task, which sees one host, may pause: only those provably its host's."""

from __future__ import annotations

import pytest

from deployer.core.healthchecks import check_slug
from deployer.engine.healthchecks import _job_of


@pytest.mark.parametrize(("name", "slug", "job"), [
    ("demo/dev backup on web1", check_slug("demo", "dev", "backup", "web1"), "backup"),
    ("demo/dev email-queue on web1", "demo-dev-email-queue-web1", "email-queue"),
    # another host's, even one whose name ends like ours
    ("demo/dev backup on db-web1", check_slug("demo", "dev", "backup", "db-web1"), None),
    ("demo/dev backup on xweb1", check_slug("demo", "dev", "backup", "xweb1"), None),
    # named as ours but slugged as another's (two checks made by hand, a slug edited in the dashboard)
    ("demo/dev backup on web1", check_slug("demo", "dev", "backup", "web2"), None),
    ("demo/dev backup on web1", "backup", None),
    # another project or environment, a renamed check, a name with no job, a job name with a space
    ("demo/prod backup on web1", check_slug("demo", "prod", "backup", "web1"), None),
    ("shop/dev backup on web1", check_slug("shop", "dev", "backup", "web1"), None),
    ("nightly backup (web1)", check_slug("demo", "dev", "backup", "web1"), None),
    ("demo/dev  on web1", check_slug("demo", "dev", "", "web1"), None),
    ("demo/dev on web1", "demo-dev--web1", None),
    ("demo/dev a on b on web1", check_slug("demo", "dev", "a on b", "web1"), None),
])
def test_a_check_is_the_hosts_only_when_its_name_and_slug_say_so(name: str, slug: str, job: str | None) -> None:
    assert _job_of("demo", "dev", "web1", name, slug) == job


def test_a_name_cut_at_the_apis_limit_is_nobodys() -> None:
    host = "h" * 90
    name = f"demo/dev backup on {host}"[:100]  # as check_spec cuts it
    assert _job_of("demo", "dev", host, name, check_slug("demo", "dev", "backup", host)) is None
