"""NAPALM looks drivers up as custom_napalm.<name>: this folder is installed under that name
(see pyproject.toml), one module per driver, each importing exactly one NetworkDriver class."""
