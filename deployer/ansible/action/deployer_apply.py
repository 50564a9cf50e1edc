"""The ``deployer_apply`` task (see deployer/ansible/plugin.py)."""

try:
    from deployer.ansible.plugin import ApplyAction as ActionModule
except ImportError as exc:  # ansible.cfg found this file, but its Python cannot import deployer
    import sys

    from ansible.plugins.action import ActionBase

    _WHY = (f"deployer is not installed for the Python that runs ansible-playbook ({sys.executable}): "
            f"install it there (pip install deployer, or pip install -e . in its clone) ({exc})")

    class ActionModule(ActionBase):  # type: ignore[no-redef,misc]
        def run(self, tmp=None, task_vars=None):  # type: ignore[no-untyped-def]
            return {"failed": True, "changed": False, "msg": _WHY}
