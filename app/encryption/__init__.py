"""Encryption at rest of templates, probes and index snapshots: envelope keys (a data key per
gallery, and one for probes, each wrapped by a master key kept outside the database)."""
