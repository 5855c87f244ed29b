"""FHIR R4 interface: DocumentReference, Binary, Patient and AuditEvent over the vault.

Everything here is a face of the existing domains: the same access policy decides,
the same audit events are written, uploads go through the same streaming pipeline.

Layout: ``wire/`` is the protocol plumbing shared by every resource; one module per
resource holds its use cases (``document_reference``, ``binary``, ``patient``,
``audit_event``, with ``*_search`` and ``*_create`` where a resource has more than
one screen of them), ``transaction`` runs transaction Bundles, ``mapping/`` converts
rows to and from resources, ``repository`` holds every FHIR query, and ``routes/``
has one thin HTTP module per resource, assembled by ``router``.
"""
