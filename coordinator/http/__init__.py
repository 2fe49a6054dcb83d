"""The coordinator's HTTP service (``foldnet serve``): labs and internet volunteers."""
