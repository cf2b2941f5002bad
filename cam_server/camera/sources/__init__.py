"""Frame sources a camera instance reads from (EPICS, bsread, simulation)."""
