"""`longlm serve`: an OpenAI-compatible HTTP server over one model that reads past its window.

engine.py runs requests on the model (planning, the KV cache kept between requests), protocol.py checks request
bodies and builds OpenAI's answer and error shapes, app.py is the Starlette app, server.py binds and runs it.
Everything here but engine.py and protocol.py needs the optional `serve` extra (starlette, uvicorn,
sse-starlette).
"""
