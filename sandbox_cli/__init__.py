"""Command-line entry points: runtime-sandbox-server and runtime-sandbox-builder."""
