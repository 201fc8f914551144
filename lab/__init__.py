"""The lab: simulated devices, phones and load tools on loopback (tests, demos, benchmarks).

Installed as ``provisioner_lab`` (same wheel as the product, mapped from the repository's
``lab/`` folder; its third-party packages come with the ``lab`` extra:
``pip install 'provisioner[lab]'``). It depends on the product, never the reverse. Its
commands (``provisioner lab up``, ``provisioner lab phones``) live in
:mod:`provisioner_lab.commands`, registered by an entry point. From a checkout,
``python -m lab.<module>`` runs the same files.
"""
