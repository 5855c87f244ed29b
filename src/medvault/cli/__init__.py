"""The ``medvault`` command line: the root app is assembled in :mod:`medvault.cli.app`.

This package stays empty on import: every domain's command module imports
:mod:`medvault.cli.console`, and loading the root app here would import those modules
back while they are still half-initialised.
"""
