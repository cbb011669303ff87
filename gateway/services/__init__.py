"""Child-process wrappers for the PostgreSQL and MQTT services the gateway depends on."""
