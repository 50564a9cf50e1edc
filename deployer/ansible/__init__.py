"""Ansible action plugins: ``deployer_apply`` and ``deployer_verify`` for playbooks.

They run on the controller, inside ansible-playbook: load the same ``deployer.yml`` and the
same inventory as the CLI, render the host Ansible hands them, and run the same probe, plan
and applier on it over Ansible's own connection (so ``ansible_become``, ssh options and
``community.general.incus`` apply as Ansible configures them). See playbooks/ and
``python3 -m deployer.ansible`` (prints the folder to give Ansible as ``action_plugins``).
"""

from __future__ import annotations

from pathlib import Path

ACTION_PLUGINS = Path(__file__).resolve().parent / "action"
