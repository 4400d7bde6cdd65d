"""Shared by the API and the workers: settings, state store, registry, jobs, errors."""
