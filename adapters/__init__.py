"""Pure protocol decoders and the canonical clinical model of aidlink.

Nothing in this package imports MQTT, database or web code: bytes go in, canonical
observations and events come out.
"""
