"""The NOC REST API (FastAPI): orders, devices, binds, audit, health and metrics.

Build it with :func:`provisioner.api.app.create_app`.
"""
