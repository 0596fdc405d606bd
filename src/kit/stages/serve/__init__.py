"""``phase=runtime``: ``python -m kit serve`` — one resident base, its modifiers, a router, OpenAI endpoints.

command.py  the CLI: config, registry and base checks, start
app.py      models, completions, model=base|<modifier>|auto
router.py   config group ``router``: rules, learned, none
store.py    the modifiers on the resident base (preloaded, or lazy with an LRU cap)
engine.py   the generation worker: mixed batches or per-request switching
http.py     the stdlib HTTP server: auth, size limit, JSON errors
openai_api.py  OpenAI request/response shapes (shared with kit.stages.vllm_standin)
"""
