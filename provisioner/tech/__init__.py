"""The technician page (``/tech/``): the install appointment from a phone. See ``pages``."""
