"""readmit's web service: HTTP API, authentication, persistence, workflow and audit."""
