"""The volume service's create flow: make a scheduled volume real on its backend."""
