"""One sans-I/O dialect per upstream protocol, and the registry of endpoints."""
