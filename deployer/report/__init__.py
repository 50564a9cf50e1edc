"""What a command came to, as plain data and the words for it, shared by both fronts.

The CLI (deployer/cli/output.py) prints it with rich; the Ansible action plugins
(deployer/ansible/host.py) return it as task results. Below both, above the engine: it
reads a Session, its TargetStates, their Checks and Changes, and imports no rich, click
or ansible.

- ``words``: the lines both fronts say (host headings, check and change lines, summaries,
  invalid input);
- ``data``: the JSON shapes of ``--json`` and of the task results, typed.

Which values are secret and how they are masked is core/redaction.py's, below this layer.
"""
