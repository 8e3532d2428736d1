"""The create-volume flow: its five steps (one module each) and their order (flow.py)."""
