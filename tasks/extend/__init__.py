"""The extend flow: the extra gigabytes reserved by the API, the file grown by the volume service."""
