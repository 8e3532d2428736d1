"""The scheduler's flow: pick a backend for a new volume and hand its create to that backend."""
