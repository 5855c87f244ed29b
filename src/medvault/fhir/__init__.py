"""FHIR R4 interface: DocumentReference, Binary, Patient and AuditEvent over the vault.

Everything here is a face of the existing domains: the same access policy decides,
the same audit events are written, uploads go through the same streaming pipeline.
"""
