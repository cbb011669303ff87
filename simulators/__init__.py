"""Device simulators that speak the devices' own wire formats over the real MQTT path."""
