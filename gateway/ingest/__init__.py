"""The ingest pipeline: MQTT in, decoded and committed rows out, acknowledgement last."""
