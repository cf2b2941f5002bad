"""Command-line entry points: the two servers and the demo."""
