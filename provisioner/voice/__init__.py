"""The voice side of provisioning: asking phones to re-fetch through the registrar.

A layer beside serving and push: it reads the store through the orders service and talks
SIP (UDP) to the registrar the settings name, nothing else.
"""
