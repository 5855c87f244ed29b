"""``python -m medvault.cli``: the same command as the ``medvault`` script."""

from medvault.cli.app import app

app()
