"""The fault suite: real broker, real processes, injected faults (make faults)."""
