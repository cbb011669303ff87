"""The HTTP API: JSON and FHIR R4 reads for clinicians' systems, health and metrics."""
