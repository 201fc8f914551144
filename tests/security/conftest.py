"""The security corpus: attacks and hostile input that must stay harmless (DESIGN.md §5).

Run it alone with ``pytest tests/security``. Fuzzing tests run a reduced number of examples
by default; ``PROVISIONER_FUZZ=full`` runs the full level (see ``tests/fuzzing.py``).
"""

import sys
from pathlib import Path

# The lab's simulated devices (lab/ at the repository root) play the attacked offices.
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.append(_ROOT)
