"""HTTP API: OpenAI-compatible endpoints plus adapter management, health and metrics.

The app is built by `agentstack.api.app.create_app`; this package does not import it, so
modules that need only the API's schemas do not pull in every route (and its imports)."""
