"""Test harness: real sshd + cron test hosts in network namespaces (see README.md)."""

from .hosts import DEFAULT_ROOTFS, HarnessError, Host, HostSpec, TestHosts, cleanup_stale

__all__ = ["DEFAULT_ROOTFS", "HarnessError", "Host", "HostSpec", "TestHosts", "cleanup_stale"]
