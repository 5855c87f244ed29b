"""FHIR Bulk Data export (HL7 Bulk Data Access IG v2, the asynchronous pattern).

A kick-off (``GET /fhir/Patient/$export``, ``GET /fhir/$export``) stores an export row
and enqueues a job in the same transaction (the outbox); the job walks the patients the
requesting principal reaches, *as that principal, resolved again when it runs*, and
writes one NDJSON file per resource type through the vault's envelope encryption into
the blob store. The client polls ``$export-status`` and downloads the files with the same
token; everything expires after ``MEDVAULT_BULK_EXPORT_TTL_SECONDS``.

Layout: ``models`` (the export and its files), ``parameters`` (the kick-off's
parameters, checked), ``identity`` (re-resolving the stored principal), ``ndjson``
(the encrypted NDJSON writer), ``repository`` (every query), ``service`` (kick-off,
status, cancel, download), ``job`` (the export itself) and ``expiry``.
"""
