"""Experiments: the YAML spec, its rendering into Ansible variables, the runner."""
