"""Declarative device-model files (TOML), one per model; read by ``gateway.profiles``."""
