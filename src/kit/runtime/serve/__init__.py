"""``phase=runtime``: ``python -m kit serve`` — one resident base, its modifiers, a router, OpenAI endpoints.

command.py  the CLI: config, registry and base checks, start
app.py      models, completions, model=base|<modifier>|auto
router.py   config group ``router``: rules, learned, none
store.py    the modifiers on the resident base (preloaded, or lazy with an LRU cap)
engine.py   the generation worker: mixed batches or per-request switching
http.py     FastAPI on uvicorn: auth, size and time limits, JSON errors, streaming, graceful drain
schemas.py  pydantic models of the OpenAI request/response bodies (strict validation, 400 naming the field)
openai_api.py  OpenAI response shapes (shared with kit.eval.vllm_standin)
"""
