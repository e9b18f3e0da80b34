"""Operator tools run from the repository (``python -m deploy.tools.<name>``)."""
