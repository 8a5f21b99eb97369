"""The chat core: OpenAI chat requests (`requests`) served by one dispatch (`dispatch`)
that the HTTP API and in-process graph nodes share. Nothing here knows about HTTP."""
