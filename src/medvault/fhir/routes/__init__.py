"""FHIR HTTP routes, one module per resource type. Thin: parse, authorise, call a
service, commit (the audit event first), respond."""
