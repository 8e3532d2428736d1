"""Snapshot flows: create and delete, checked and charged by the API, carried out by the volume's volume service."""
