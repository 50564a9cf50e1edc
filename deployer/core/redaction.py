"""Which values are secret, and how every output masks them. Pure.

The one place both are decided: the release (verify's check that no secret sits in a
crontab), the CLI (plans, logs, JSON, JUnit) and the Ansible task results all ask here.
Resolving a secret reference into its value is config/secrets.py's business; this module
only knows which resolved values of a job came from one (``JobSpec.secret_names``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

from deployer.core.desired import JobSpec

REDACTED: Final = "********"
# Lines of a multi-line secret at least this long are redacted on their own (shorter ones,
# such as "abc" in a PEM key, are ordinary words that would blank out unrelated output).
SECRET_LINE_MIN: Final = 4


def secret_values(jobs: Iterable[JobSpec]) -> frozenset[str]:
    """The values of the jobs' environment and alert configs that come from a secret reference (empty ones aside)."""
    return frozenset({value for job in jobs for name, value in job.env if name in job.secret_names and value}
                     | {value for job in jobs for value in job.alert_secrets if value})


@functools.lru_cache(maxsize=64)
def redaction_patterns(secrets: frozenset[str]) -> tuple[str, ...]:
    """What redaction replaces: each secret, and each line of a multi-line one (a PEM key),
    since output is shown, and streamed, a line at a time; longest first."""
    patterns: set[str] = set()
    for secret in secrets:
        if not secret:
            continue
        patterns.add(secret)
        if "\n" in secret or "\r" in secret:
            patterns.update(line.strip() for line in secret.replace("\r", "\n").split("\n")
                            if len(line.strip()) >= SECRET_LINE_MIN)
    return tuple(sorted(patterns, key=len, reverse=True))


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret (and line of a multi-line one) replaced by ``REDACTED``."""
    for pattern in redaction_patterns(frozenset(secrets)):
        text = text.replace(pattern, REDACTED)
    return text


def redact_data(data: Any, redact_text: Callable[[str], str]) -> Any:
    """Every string of a JSON-able value redacted, keys too (before encoding: JSON escapes
    would hide a secret holding a quote, a backslash or a non-ASCII character from the
    text's redaction). Tuples come back as lists, as JSON has them."""
    if isinstance(data, str):
        return redact_text(data)
    if isinstance(data, dict):
        return {redact_data(k, redact_text): redact_data(v, redact_text) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [redact_data(v, redact_text) for v in data]
    return data


@dataclass(frozen=True)
class Redactor:
    """The secrets of one command, and the two ways output is masked with them."""

    secrets: frozenset[str] = frozenset()

    @classmethod
    def of_jobs(cls, jobs: Iterable[JobSpec]) -> Redactor:
        return cls(secret_values(jobs))

    def text(self, text: str) -> str:
        return redact(text, self.secrets)

    def data(self, data: Any) -> Any:
        return redact_data(data, self.text)
