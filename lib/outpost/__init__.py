"""Outpost Functions: a serverless JupyterHub Outpost for the OutpostSpawner."""
