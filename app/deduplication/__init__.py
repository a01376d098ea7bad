"""Gallery deduplication: jobs that find the records enrolled more than once (issue 20)."""
