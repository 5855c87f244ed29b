"""FHIR protocol plumbing, the same for every resource: formats (``media``),
OperationOutcome problem types and bodies (``outcome``), Bundles, the
CapabilityStatement, the streaming JSON reader and base64 decoder, structural
validation, ids and references, search-parameter parsing and paging, and primitive
formats. Only ``http`` (parameters, Prefer, bodies) and ``responses`` (negotiation,
JSON responses, the OperationOutcome renderer) import the web framework.

Nothing here knows the vault's domains or its database: resource modules in
``medvault.fhir`` use this package, never the other way round.
"""
