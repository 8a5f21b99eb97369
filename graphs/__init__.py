"""LangGraph workflow definitions on the roles, and their registry. Not built yet."""
