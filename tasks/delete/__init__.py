"""The delete flow: checked and started by the API, finished by the volume's volume service."""
