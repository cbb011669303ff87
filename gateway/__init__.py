"""aidlink gateway: ingest pipeline, store, API and command line."""
