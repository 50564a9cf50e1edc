"""Ansible loads these files by path (``action_plugins``); one file per task name."""
