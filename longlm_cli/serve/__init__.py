"""`longlm serve`: an OpenAI-compatible HTTP server over one model that reads past its window.

engine.py runs requests on the model (planning, the KV cache kept between requests), store.py keeps long prompts
in the document cache across restarts, protocol.py checks request bodies and builds OpenAI's answer and error
shapes, settings.py holds the server's settings, app.py is the Starlette app, server.py binds and runs it. Only
app.py and server.py's `serve` need the optional `serve` extra (starlette, uvicorn, sse-starlette).
"""
