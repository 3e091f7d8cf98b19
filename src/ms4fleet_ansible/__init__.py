"""The Ansible engine's Python side that the ``ms4fleet`` CLI reaches: reading YAML inventories with Ansible
itself. (Roles, playbooks and plugins are the collection ``ms4fleet.fleet``, outside this package.)"""
