"""``[ssh://][user@]host[:port]`` as people write SSH addresses (jump hosts, Incus hosts)."""

from __future__ import annotations


def parse_ssh_address(spec: str) -> tuple[str | None, str, int | None]:
    """-> (user, host, port); an IPv6 address goes in brackets. ValueError when malformed."""
    text = spec.strip()
    if text.startswith("ssh://"):
        text = text[len("ssh://"):].rstrip("/")
    user = None
    if "@" in text:
        user, _, text = text.rpartition("@")
    port: int | None = None
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(spec)
            port = int(rest[1:])
    elif text.count(":") == 1:
        host, _, raw = text.partition(":")
        port = int(raw)
    else:
        host = text
    if not host or (user is not None and not user) or any(c.isspace() for c in host):
        raise ValueError(spec)
    return user, host, port
