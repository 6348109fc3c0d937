"""Example API behind wsgishield: health check, items CRUD and an admin area."""
