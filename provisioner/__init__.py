"""Zero-touch provisioning for the Office Smart virtual PBX."""

__version__ = "0.1.0"
