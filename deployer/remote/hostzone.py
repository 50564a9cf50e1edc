"""Which zone the target's cron reads schedules in. Runs on the target (standard library only).

Its own module: the probe reports it, and the run wrapper of a job with alerts needs it for
the next-run metric; the wrapper's bundle must not carry the probe's helpers for it.
"""

from __future__ import annotations

import os


def target_timezone() -> str:
    """The zone cron reads schedules in: TZ, else /etc/timezone, else the /etc/localtime link, else UTC."""
    tz = os.environ.get("TZ", "")
    if tz:
        return tz.lstrip(":")
    try:
        with open("/etc/timezone") as f:
            name = f.read().strip()
            if name:
                return name
    except OSError:
        pass
    try:
        target = os.readlink("/etc/localtime")
        if "zoneinfo/" in target:
            return target.split("zoneinfo/", 1)[1]
    except OSError:
        pass
    return "UTC"
