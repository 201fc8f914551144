"""The security corpus: attacks and hostile input that must stay harmless (DESIGN.md §5).

Run it alone with ``pytest tests/security``. Fuzzing tests run a reduced number of examples
by default; ``PROVISIONER_FUZZ=full`` runs the full level (see ``tests/fuzzing.py``).

The lab's simulated devices (``provisioner_lab``, installed with the ``lab`` extra) play the
attacked offices.
"""
