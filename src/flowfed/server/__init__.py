"""The flowfed control-plane server (FastAPI): REST API, auth, live run events."""
