"""ordnance."""
