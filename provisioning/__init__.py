"""Principals, devices, pairings and patient assignments: what technicians do every day."""
