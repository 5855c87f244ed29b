"""Mapping between the vault's rows and FHIR R4 resources (JSON dicts)."""
