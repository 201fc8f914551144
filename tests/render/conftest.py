"""Fixtures for rendering tests: a Renderer over the sample orders."""

from __future__ import annotations

import pytest


@pytest.fixture
def renderer(sample_inventory, settings):  # type: ignore[no-untyped-def]
    from provisioner.render.engine import Renderer

    return Renderer(settings, sample_inventory)
