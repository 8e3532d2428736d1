"""volchain's Cinder-compatible REST API (v3)."""
