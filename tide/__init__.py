"""tide: the ground floor and the roof of the other packages.

Bottom, imported by every process and importing nothing else of ours:
``tide.api`` (wire types) and ``tide.daemon`` (the daemons' config file loader
and sd_notify).  Top, importing anything and imported by nothing:
``tide.cli`` (the ``tide`` command) and ``tide.dev`` (the all-in-one cluster).
pyproject.toml's import-linter contracts keep it so.
"""
