"""The Ansible side of deployer's action plugins: arguments in, one host's result out.

A task runs on the controller for one host: it finds the declaration and the environment
(host.py), renders that host from the same inventory, and runs the phase over
``AnsibleTransport`` (Ansible's connection, Ansible's become). A new task, e.g.
``deployer_rollback``, is a subclass naming its extra arguments and its phase, plus a
three-line file in action/.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ansible.plugins.action import ActionBase

from deployer.ansible import host as hosts
from deployer.ansible.transport import AnsibleTransport
from deployer.errors import InvalidInput

COMMON_ARGS: dict[str, Any] = {
    # The environment of deployer.yml; default: the variable deployer_env, else the one
    # whose inventory is the inventory Ansible reads.
    "env": {"type": "str"},
    # The declaration; default: the variable deployer_file, else $DEPLOYER_FILE, else
    # deployer.yml in the folder ansible-playbook runs in (as the CLI).
    "file": {"type": "str"},
}


class DeployerAction(ActionBase):  # type: ignore[misc]  # ansible-core ships no type hints
    """Common part of every deployer task; subclasses give ``ARGS`` and ``phase``."""

    TRANSFERS_FILES = False
    _supports_check_mode = True
    _supports_async = False
    ARGS: ClassVar[dict[str, Any]] = {}

    def phase(self, host: hosts.Host, transport: AnsibleTransport, args: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        task_vars = task_vars or {}
        result: dict[str, Any] = super().run(tmp, task_vars)
        _validation, args = self.validate_argument_spec(argument_spec={**COMMON_ARGS, **self.ARGS})
        env = args.get("env") or self._var(task_vars, hosts.ENV_VAR)
        file = hosts.declaration_file(args.get("file") or self._var(task_vars, hosts.FILE_VAR))
        sources = [*self._list(task_vars.get("ansible_inventory_sources")),
                   str(task_vars.get("inventory_dir") or ""), str(task_vars.get("inventory_file") or "")]
        try:
            host = hosts.load_host(file, env, str(task_vars["inventory_hostname"]), sources)
            # A phase reads what it needs before it contacts the host (a key, a state file): invalid input too.
            result.update(self.phase(host, AnsibleTransport(self), args))
        except InvalidInput as exc:
            result.update(failed=True, changed=False, msg=hosts.invalid_message(exc))
        return result

    def _var(self, task_vars: dict[str, Any], name: str) -> str | None:
        value = task_vars.get(name)
        if value is None:
            return None
        return str(self._templar.template(value)) or None

    @staticmethod
    def _list(value: Any) -> list[str]:
        if value is None:
            return []
        if isinstance(value, str):
            return [value]
        return [str(v) for v in value]


class ApplyAction(DeployerAction):
    """``deployer_apply``: make the host match; ``--check`` plans only, ``--diff`` shows it."""

    ARGS: ClassVar[dict[str, Any]] = {"adopt": {"type": "bool", "default": False}}  # as `apply --adopt`

    def phase(self, host: hosts.Host, transport: AnsibleTransport, args: dict[str, Any]) -> dict[str, Any]:
        api = hosts.open_api(host)  # the environment's healthchecks, if it names one: the host's checks follow it
        return hosts.apply(host, transport, check_mode=bool(self._task.check_mode), diff=bool(self._task.diff),
                           adopt=bool(args.get("adopt")), api=api)


class RollbackAction(DeployerAction):
    """``deployer_rollback``: as `deployer rollback ENV [--to REVISION]`."""

    ARGS: ClassVar[dict[str, Any]] = {"to": {"type": "str"}}

    def phase(self, host: hosts.Host, transport: AnsibleTransport, args: dict[str, Any]) -> dict[str, Any]:
        return hosts.lifecycle(host, transport, "rollback", bool(self._task.check_mode), bool(self._task.diff),
                               to=args.get("to"))


class DestroyAction(DeployerAction):
    """``deployer_destroy``: as `deployer destroy ENV [--purge-logs]`."""

    ARGS: ClassVar[dict[str, Any]] = {"purge_logs": {"type": "bool", "default": False}}

    def phase(self, host: hosts.Host, transport: AnsibleTransport, args: dict[str, Any]) -> dict[str, Any]:
        return hosts.lifecycle(host, transport, "destroy", bool(self._task.check_mode), bool(self._task.diff),
                               purge_logs=bool(args.get("purge_logs")))


class VerifyAction(DeployerAction):
    """``deployer_verify``: the audit; the task fails when a check fails (``strict``: or warns)."""

    ARGS: ClassVar[dict[str, Any]] = {
        "strict": {"type": "bool", "default": False},
        # as `verify --notify [--notify-state FILE]`: tell the environment's channels this host's
        # incidents (cron stopped, our block gone or edited...), once, and their recovery
        "notify": {"type": "bool", "default": False},
        "notify_state": {"type": "str"},
    }

    def phase(self, host: hosts.Host, transport: AnsibleTransport, args: dict[str, Any]) -> dict[str, Any]:
        return hosts.verify(host, transport, strict=bool(args.get("strict")), notify=bool(args.get("notify")),
                            notify_state=args.get("notify_state") or None, check_mode=bool(self._task.check_mode))
