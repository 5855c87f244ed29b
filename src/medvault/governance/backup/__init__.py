"""``medvault backup`` and ``medvault restore``: consistent, incremental, provable backups.

A backup is a directory: database dumps, a copy of every blob, and ``manifest.json``
(what is there, with SHA-256, and the latest signed audit checkpoint). Key material is
never part of it (``medvault backup keys`` writes it elsewhere). See
``docs/backup-restore.md`` for the runbook.
"""
