"""``python3 -m deployer.ansible``: the folder of deployer's action plugins, for ansible.cfg
(``action_plugins = ...``) or ``ANSIBLE_ACTION_PLUGINS``, wherever deployer is installed."""

from deployer.ansible import ACTION_PLUGINS

print(ACTION_PLUGINS)
