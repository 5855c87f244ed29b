"""Helpers shared by the test packages, under public names; fixtures stay in conftest files.

Starlette's ``TestClient`` annotates its methods with ``httpx2``, which is not installed
(the vault uses httpx), so mypy sees every TestClient response as ``Any``. A helper that
returns a response binds it to an ``httpx.Response`` variable first: that is what it is
at run time, and its callers are then type-checked.
"""
