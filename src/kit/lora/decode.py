"""kit's own decode loop: rows that come and go, each with its own position and adapter, and on
CUDA a decode step recorded once as a CUDA graph and replayed for every token.

Why not ``generate``: HF's static cache writes every row at one shared position, so a row
cannot join a running batch, and compiling ``model.forward`` under ``generate`` with CUDA
graphs failed ("accessing tensor output of CUDAGraphs that has been overwritten"). Here the
loop owns every buffer, calls the HF model's own ``forward`` (all of its family code: RoPE,
norms, soft-capping, sliding windows) and passes it:

- ``RowCache``: a transformers ``Cache`` of fixed rows x length per layer; a row's tokens sit
  at ``offset + position`` (``offset``: its left padding at prefill); a decode step writes
  each row at its own slot (one ``scatter_``), so finished rows leave and new rows join
  between any two steps (rows are kept packed at the front: a leaving row's place is taken
  by the last row, one copy of its cache);
- the attention masks, built by kit per row in the format the model's attention wants
  (bool for ``sdpa``, additive for ``eager``; full and sliding-window layers each their own),
  so the model builds none (no host synchronisation inside the step);
- the fused LoRA rows (kit.lora.fused): a LoRA slot per row.

On CUDA (``capture=True``) a decode step for ``n`` rows (rounded up to a power of two, the
extra rows writing into free cache rows) and a key length bucket is recorded once with
``torch.cuda.CUDAGraph`` and replayed: token ids, positions, slots and the per-row LoRA mask
are copied into fixed buffers first, adapter weights live in fixed buffers (switching
adapters copies weights, never re-records). The prefill runs eagerly (its length varies).
The same step code runs eagerly on the CPU, where tests compare its tokens with HF
``generate``; ``tests/test_fused_lora.py::test_recorded_decode_step_matches_eager`` and
``bench/gpu_run.sh`` exercise the capture.

``plan(model, kwargs)`` says whether a ``generate`` call's settings are ones this loop
reproduces (greedy or temperature/top-k/top-p sampling, ``min_new_tokens``, eos, stopping
criteria); anything else (beams, repetition penalty, logits output, ...) goes to HF
``generate`` on the same fused model.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from transformers.cache_utils import Cache, CacheLayerMixin

# model_type -> how its forward takes a prepared mask: "dict" (a mask per layer type, e.g.
# {"full_attention": m, "sliding_attention": m}) or "one" (one 4D mask for every layer)
FAMILIES = {"qwen2": "dict", "qwen3": "dict", "gemma2": "dict", "llama": "one", "mistral": "one", "phi3": "one", "gemma": "one"}
ATTENTION = ("sdpa", "eager")
MIN_LENGTH = 64  # smallest cache length / key bucket


def unsupported(model) -> str | None:
    """Why this loop cannot run ``model`` (None: it can)."""
    config = model.config
    if config.model_type not in FAMILIES:
        return f"model_type {config.model_type!r} is not one of {sorted(FAMILIES)}"
    attn = getattr(config, "_attn_implementation", None)
    if attn not in ATTENTION:
        return f"attention {attn!r} is not one of {ATTENTION}"
    rope = getattr(config, "rope_scaling", None) or {}
    if rope.get("rope_type", rope.get("type")) in ("dynamic", "longrope"):
        return "dynamic RoPE scaling (it depends on the sequence length)"
    return None


def inference(func):
    """Run under torch.inference_mode (the cache is allocated and written only there)."""
    import functools

    @functools.wraps(func)
    def wrapped(*args, **kwargs):
        import torch

        with torch.inference_mode():
            return func(*args, **kwargs)

    return wrapped


def _pow2(n: int, floor: int = 1) -> int:
    p = floor
    while p < n:
        p *= 2
    return p


# -- the cache -------------------------------------------------------------------------------


@dataclass
class Prefill:
    start: int  # first cache row
    rows: int
    width: int


@dataclass
class Step:
    rows: int
    slots: object  # [rows] cache index each row writes at
    kv_len: int


class RowLayer(CacheLayerMixin):
    is_sliding = False

    def __init__(self, cache: RowCache):
        super().__init__()
        self.cache = cache

    def lazy_initialization(self, key_states):
        import torch

        _, heads, _, dim = key_states.shape
        shape = (self.cache.rows, heads, self.cache.length, dim)
        self.keys = torch.zeros(shape, dtype=key_states.dtype, device=key_states.device)
        self.values = torch.zeros(shape, dtype=key_states.dtype, device=key_states.device)
        self.is_initialized = True

    def update(self, key_states, value_states, cache_kwargs=None):
        if not self.is_initialized:
            self.lazy_initialization(key_states)
        plan = self.cache.plan
        if isinstance(plan, Prefill):
            rows = slice(plan.start, plan.start + plan.rows)
            self.keys[rows, :, : plan.width].copy_(key_states)
            self.values[rows, :, : plan.width].copy_(value_states)
            return key_states, value_states  # a new row attends to its own prompt only
        n, heads, _, dim = key_states.shape
        index = plan.slots.view(n, 1, 1, 1).expand(n, heads, 1, dim)
        self.keys[:n].scatter_(2, index, key_states)
        self.values[:n].scatter_(2, index, value_states)
        return self.keys[:n, :, : plan.kv_len], self.values[:n, :, : plan.kv_len]

    def get_mask_sizes(self, cache_position):
        return self.cache.length, 0

    def get_seq_length(self) -> int:
        return 0

    def get_max_cache_shape(self) -> int:
        return self.cache.length

    def resize(self, rows: int, length: int) -> None:
        if not self.is_initialized:
            return
        import torch

        for attr in ("keys", "values"):
            old = getattr(self, attr)
            new = torch.zeros((rows, old.shape[1], length, old.shape[3]), dtype=old.dtype, device=old.device)
            r, n = min(rows, old.shape[0]), min(length, old.shape[2])
            new[:r, :, :n].copy_(old[:r, :, :n])
            setattr(self, attr, new)

    def move(self, src: int, dst: int) -> None:
        if self.is_initialized:
            self.keys[dst].copy_(self.keys[src])
            self.values[dst].copy_(self.values[src])


class RowCache(Cache):
    """Fixed rows x length of keys and values per layer; see the module docstring."""

    def __init__(self, layers: int, rows: int, length: int):
        self.rows, self.length, self.plan = rows, length, None
        super().__init__(layers=[RowLayer(self) for _ in range(layers)])

    def resize(self, rows: int, length: int) -> None:
        for layer in self.layers:
            layer.resize(rows, length)
        self.rows, self.length = rows, length

    def move(self, src: int, dst: int) -> None:
        for layer in self.layers:
            layer.move(src, dst)


# -- masks -----------------------------------------------------------------------------------


class Masks:
    """Attention masks in the format and per layer type the model's forward takes as given."""

    def __init__(self, model):
        import torch

        config = model.config
        self.kind = FAMILIES[config.model_type]
        self.eager = config._attn_implementation == "eager"
        self.dtype = next(model.parameters()).dtype
        self.window = getattr(config, "sliding_window", None)
        types = getattr(config, "layer_types", None) or ["full_attention"]
        self.types = sorted(set(types))
        if self.kind == "one":  # Mistral/Phi-3 apply their sliding window to every layer when set
            self.types = ["sliding_attention" if self.window else "full_attention"]
        self.min = torch.finfo(self.dtype).min

    def _format(self, allowed):
        if not self.eager:
            return allowed
        import torch

        zero = torch.zeros((), dtype=self.dtype, device=allowed.device)
        return torch.where(allowed, zero, torch.full((), self.min, dtype=self.dtype, device=allowed.device))

    def _pack(self, full, sliding):
        made = {t: self._format(sliding if t == "sliding_attention" else full) for t in self.types}
        return made if self.kind == "dict" else made[self.types[0]]

    def prefill(self, pads, width: int, device):
        """[rows, 1, width, width]: causal over the row's own tokens (a pad query sees itself only)."""
        import torch

        i = torch.arange(width, device=device).view(1, width, 1)
        j = torch.arange(width, device=device).view(1, 1, width)
        pads = pads.view(-1, 1, 1)
        full = ((j >= pads) & (j <= i)) | (i == j)
        sliding = (full & (i - j < self.window)) | (i == j) if self.window else full
        return self._pack(full.unsqueeze(1), sliding.unsqueeze(1))

    def step(self, offsets, slots, kv_len: int):
        """[rows, 1, 1, kv_len]: each row's own tokens, up to the one it writes now."""
        import torch

        j = torch.arange(kv_len, device=slots.device).view(1, kv_len)
        full = (j >= offsets.view(-1, 1)) & (j <= slots.view(-1, 1))
        sliding = full & (slots.view(-1, 1) - j < self.window) if self.window else full
        return self._pack(full.view(-1, 1, 1, kv_len), sliding.view(-1, 1, 1, kv_len))


# -- the loop --------------------------------------------------------------------------------


@dataclass
class Row:
    tag: object  # the caller's handle
    offset: int  # cache index of the row's position 0
    tokens: int  # tokens in the cache
    slot: int | None  # LoRA slot (None: the base)


@dataclass
class Settings:
    """What a ``generate`` call asks, in the terms this loop runs."""

    max_new: int
    min_new: int
    eos: list[int]
    pad: int
    sample: bool
    warpers: list = field(default_factory=list)  # HF logits warpers, in HF's order
    stopping: object = None  # a StoppingCriteriaList, or None
    return_dict: bool = False


class Decoder:
    def __init__(self, model, fused=None, rows: int = 16, capture: bool = False):
        self.model, self.fused = model, fused
        self.device = next(model.parameters()).device
        self.masks = Masks(model)
        self.layers = model.config.num_hidden_layers
        self.capacity, self.length = rows, MIN_LENGTH
        self.cache = RowCache(self.layers, rows, self.length)
        self.rows: list[Row] = []
        # capture on a CPU runs the same fixed-buffer path, "replaying" by running the step again
        # (how tests exercise everything but the CUDA graph itself)
        self.capture = capture
        self.graphs: dict = {}
        self.captures = 0  # graphs recorded (tests and benchmarks read it)
        self._static = None
        self._pool = None
        self._graph_key = None

    # -- rows --------------------------------------------------------------------------------

    @inference
    def reserve(self, rows: int, length: int) -> None:
        """Room for ``rows`` rows of ``length`` tokens (grown by powers of two; recorded graphs are dropped)."""
        rows, length = max(rows, self.capacity), max(length, self.length)
        if rows == self.capacity and length == self.length:
            return
        self.capacity, self.length = _pow2(rows), _pow2(length, MIN_LENGTH)
        self.cache.resize(self.capacity, self.length)
        self.graphs.clear()
        self._static = None

    def tags(self) -> list:
        return [r.tag for r in self.rows]

    @inference
    def admit(self, prompts: list[list[int]], slots: list[int | None], tags: list):
        """Prefill new rows (left-padded together, appended after the running ones); returns
        each new row's next-token logits, fp32 [len(prompts), vocab]."""
        import torch

        width = max(len(p) for p in prompts)
        self.reserve(len(self.rows) + len(prompts), width + 1)
        start = len(self.rows)
        pads = [width - len(p) for p in prompts]
        ids = torch.tensor([[0] * pad + p for pad, p in zip(pads, prompts)], device=self.device)
        positions = torch.tensor([[0] * pad + list(range(len(p))) for pad, p in zip(pads, prompts)], device=self.device)
        pads_t = torch.tensor(pads, device=self.device)
        self._rows_for_lora(slots)
        self.cache.plan = Prefill(start, len(prompts), width)
        out = self.model(
            input_ids=ids,
            position_ids=positions,
            attention_mask=self.masks.prefill(pads_t, width, self.device),
            past_key_values=self.cache,
            cache_position=torch.arange(width, device=self.device),
            use_cache=True,
            logits_to_keep=1,
        )
        for prompt, pad, slot, tag in zip(prompts, pads, slots, tags):
            self.rows.append(Row(tag, pad, len(prompt), slot))
        return out.logits[:, -1].float()

    @inference
    def drop(self, tag) -> None:
        """Remove a row; the last row takes its place (rows stay packed)."""
        i = next(k for k, r in enumerate(self.rows) if r.tag == tag)
        last = len(self.rows) - 1
        if i != last:
            self.cache.move(last, i)
            self.rows[i] = self.rows[last]
        self.rows.pop()

    def clear(self) -> None:
        self.rows = []

    def _rows_for_lora(self, slots: list[int | None]) -> None:
        if self.fused is not None and self.fused.groups and self.fused.mode is not None:
            self.fused.use_rows(slots)

    # -- one decode step -----------------------------------------------------------------------

    @inference
    def step(self, tokens: list[int]):
        """Feed each running row its newest token (in row order); next-token logits, fp32 [rows, vocab]."""
        import torch

        n = len(self.rows)
        need = max(r.offset + r.tokens for r in self.rows) + 1
        self.reserve(n, need)
        slots = [r.offset + r.tokens for r in self.rows]
        peft_forward = self.fused is not None and self.fused.mode is None  # PEFT's own Python: never recorded
        if self.capture and not peft_forward:
            logits = self._replay(tokens, slots)
        else:
            dev = self.device
            slot_t = torch.tensor(slots, device=dev)
            self._rows_for_lora([r.slot for r in self.rows])
            logits = self._forward(
                torch.tensor(tokens, device=dev).view(n, 1),
                torch.tensor([r.tokens for r in self.rows], device=dev).view(n, 1),
                torch.tensor([r.offset for r in self.rows], device=dev),
                slot_t,
                max(slots) + 1,
            )
        for r in self.rows:
            r.tokens += 1
        return logits

    def _forward(self, ids, positions, offsets, slots, kv_len: int):
        n = ids.shape[0]
        self.cache.plan = Step(n, slots, kv_len)
        out = self.model(
            input_ids=ids,
            position_ids=positions,
            attention_mask=self.masks.step(offsets, slots, kv_len),
            past_key_values=self.cache,
            cache_position=slots[:1],
            use_cache=True,
            logits_to_keep=1,
        )
        return out.logits[:, -1].float()

    # -- CUDA graphs -----------------------------------------------------------------------------

    def _buffers(self):
        import torch

        slots = self.fused.slots if self.fused is not None else 1
        if self._static is not None and self._static["onehot"].shape[1] != slots:
            self._static = None  # more LoRA slots than when the buffers were made
            self.graphs.clear()
        if self._static is None:
            dev, c = self.device, self.capacity
            dtype = next(self.model.parameters()).dtype
            self._static = {
                "ids": torch.zeros(c, 1, dtype=torch.long, device=dev),
                "positions": torch.zeros(c, 1, dtype=torch.long, device=dev),
                "offsets": torch.zeros(c, dtype=torch.long, device=dev),
                "slots": torch.zeros(c, dtype=torch.long, device=dev),
                "onehot": torch.zeros(c, slots, dtype=dtype, device=dev),
                "logits": None,
            }
            self._pool = torch.cuda.graph_pool_handle() if self.device.type == "cuda" else None
        return self._static

    def _replay(self, tokens: list[int], slots: list[int]):
        """Copy this step's inputs into the fixed buffers; replay its graph (record it on first use)."""
        import torch

        n, rows = len(self.rows), self.rows
        bucket = min(_pow2(n), self.capacity)
        kv_len = min(_pow2(max(slots) + 1, MIN_LENGTH), self.length)
        buf = self._buffers()
        pad = bucket - n  # rows past the running ones write into free cache rows at index 0
        buf["ids"][:bucket, 0].copy_(torch.tensor(tokens + [0] * pad))
        buf["positions"][:bucket, 0].copy_(torch.tensor([r.tokens for r in rows] + [0] * pad))
        buf["offsets"][:bucket].copy_(torch.tensor([r.offset for r in rows] + [0] * pad))
        buf["slots"][:bucket].copy_(torch.tensor(slots + [0] * pad))
        mode = self._lora_mode([r.slot for r in rows] + [rows[-1].slot] * pad, buf)
        version = self.fused.version if self.fused is not None else 0
        key = (bucket, kv_len, mode, version)
        graph = self.graphs.get(key)
        if graph is None:
            graph = self._record(bucket, kv_len, buf)
            self.graphs[key] = graph
        else:
            graph.replay()
        return buf["logits"][:n].clone()

    def _lora_mode(self, slots: list[int | None], buf):
        """Set the LoRA rows for this step; the part of the graph key they decide."""
        fused = self.fused
        if fused is None or not fused.groups or fused.mode is None:
            return None
        fused.use_rows(slots)
        if fused.mode == "mixed":
            hot = fused.onehot.squeeze(-1)
            buf["onehot"][: hot.shape[0]].copy_(hot)
        ranks = fused.ranks(fused.active) if fused.mode == "single" else None
        return fused.mode, ranks

    def _body(self, bucket: int, kv_len: int, buf) -> None:
        if self.fused is not None and self.fused.mode == "mixed":
            self.fused.set_onehot(buf["onehot"][:bucket])
        logits = self._forward(
            buf["ids"][:bucket], buf["positions"][:bucket], buf["offsets"][:bucket], buf["slots"][:bucket], kv_len
        )
        if buf["logits"] is None:
            import torch

            buf["logits"] = torch.zeros(self.capacity, logits.shape[-1], dtype=torch.float32, device=self.device)
        buf["logits"][:bucket].copy_(logits)

    def _record(self, bucket: int, kv_len: int, buf):
        """Warm up on a side stream (this computes the step: its writes are the step's own), then record."""
        import torch

        self.captures += 1
        if self.device.type != "cuda":
            self._body(bucket, kv_len, buf)
            return _Rerun(lambda: self._body(bucket, kv_len, buf))

        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):  # the same inputs twice: the cache writes are idempotent
                self._body(bucket, kv_len, buf)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            self._body(bucket, kv_len, buf)
        return graph

    # -- generate() for a batch ------------------------------------------------------------------

    @inference
    def generate(self, input_ids, attention_mask, slot: int | None, settings: Settings):
        """What HF ``generate`` returns for these left-padded rows: prompts + new tokens, rows that
        ended padded with ``settings.pad`` (as ``GenerateDecoderOnlyOutput`` when asked)."""
        import torch

        batch = input_ids.shape[0]
        mask = attention_mask.bool() if attention_mask is not None else torch.ones_like(input_ids, dtype=torch.bool)
        prompts = [input_ids[b][mask[b]].tolist() for b in range(batch)]
        self.clear()
        self.reserve(batch, max(len(p) for p in prompts) + settings.max_new + 1)
        logits = self.admit(prompts, [slot] * batch, list(range(batch)))
        new: list[list[int]] = [[] for _ in range(batch)]
        eos = torch.tensor(settings.eos, device=logits.device) if settings.eos else None
        for step in range(settings.max_new):
            tags = self.tags()
            picked = choose(logits, settings, step, eos).tolist()
            for tag, token in zip(tags, picked):
                new[tag].append(token)
            ended = [t for t, tok in zip(tags, picked) if tok in settings.eos]
            if settings.stopping is not None:
                ended += self._stopped(input_ids, tags, new, settings, logits)
            if step == settings.max_new - 1:
                break
            for tag in set(ended):
                self.drop(tag)
            if not self.rows:
                break
            logits = self.step([new[t][-1] for t in self.tags()])
        self.clear()
        width = max(len(n) for n in new)
        tail = torch.tensor([n + [settings.pad] * (width - len(n)) for n in new], dtype=input_ids.dtype)
        sequences = torch.cat([input_ids, tail.to(input_ids.device)], dim=1)
        if settings.return_dict:
            from transformers.generation.utils import GenerateDecoderOnlyOutput

            return GenerateDecoderOnlyOutput(sequences=sequences)
        return sequences

    def _stopped(self, input_ids, tags, new, settings: Settings, logits) -> list:
        import torch

        rows = torch.tensor([input_ids[t].tolist() + new[t] for t in tags], device=input_ids.device)
        done = settings.stopping(rows, logits)
        return [t for t, d in zip(tags, done.tolist()) if d]


class _Rerun:
    """A recorded step off CUDA: replay runs the same step code on the same fixed buffers."""

    def __init__(self, body):
        self.replay = body


def choose(logits, settings: Settings, step: int, eos, generators=None):
    """The next token per row, as HF picks it: eos barred before ``min_new``; greedy argmax, or the
    warpers then a multinomial draw (``generators``: one torch.Generator per row)."""
    import torch

    if step < settings.min_new and eos is not None:
        logits = logits.clone()
        logits[:, eos] = float("-inf")
    if not settings.sample:
        return logits.argmax(-1)
    for warp in settings.warpers:
        logits = warp(None, logits)
    probs = torch.softmax(logits, dim=-1)
    if generators is None:
        return torch.multinomial(probs, num_samples=1).squeeze(1)
    return torch.cat([torch.multinomial(p, 1, generator=g) for p, g in zip(probs, generators)])


# -- which generate() calls the loop reproduces ------------------------------------------------

# GenerationConfig fields that must keep their defaults (anything set there is HF generate's job)
NEUTRAL = {
    "num_beams": 1,
    "num_return_sequences": 1,
    "repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "encoder_repetition_penalty": 1.0,
    "encoder_no_repeat_ngram_size": 0,
    "bad_words_ids": None,
    "force_words_ids": None,
    "suppress_tokens": None,
    "begin_suppress_tokens": None,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "sequence_bias": None,
    "exponential_decay_length_penalty": None,
    "guidance_scale": None,
    "min_p": None,
    "typical_p": 1.0,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
    "renormalize_logits": False,
    "output_scores": False,
    "output_logits": None,
    "output_attentions": False,
    "output_hidden_states": False,
    "stop_strings": None,
    "assistant_model": None,
    "prompt_lookup_num_tokens": None,
    "watermarking_config": None,
    "penalty_alpha": None,
    "dola_layers": None,
    "constraints": None,
    "min_length": 0,
    "token_healing": False,
}
TAKEN = {"input_ids", "attention_mask", "generation_config", "stopping_criteria", "return_dict_in_generate"}


def plan(model, kwargs: dict) -> Settings | None:
    """The Settings for a ``generate(**kwargs)`` call on ``model``, or None when HF generate must run it."""
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    if unsupported(model) is not None:
        return None
    config = copy.deepcopy(kwargs.get("generation_config") or model.generation_config)
    rest = {k: v for k, v in kwargs.items() if k not in TAKEN}
    if kwargs.get("logits_processor"):
        return None
    rest.pop("logits_processor", None)
    unused = config.update(**rest)
    if unused or getattr(config, "streamer", None) is not None:
        return None
    for name, neutral in NEUTRAL.items():
        value = getattr(config, name, neutral)
        if value != neutral and not (neutral in (None, 0, False) and not value):
            return None
    prompt = kwargs["input_ids"].shape[1]
    max_new = config.max_new_tokens if config.max_new_tokens is not None else config.max_length - prompt
    eos = config.eos_token_id
    eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    pad = config.pad_token_id if config.pad_token_id is not None else (eos[0] if eos else 0)
    warpers = []
    if config.do_sample:
        if config.temperature is not None and config.temperature != 1.0:
            warpers.append(TemperatureLogitsWarper(config.temperature))
        if config.top_k is not None and config.top_k != 0:
            warpers.append(TopKLogitsWarper(top_k=config.top_k, min_tokens_to_keep=1))
        if config.top_p is not None and config.top_p < 1.0:
            warpers.append(TopPLogitsWarper(top_p=config.top_p, min_tokens_to_keep=1))
    stopping = kwargs.get("stopping_criteria") or None
    if max_new < 1:
        return None
    return Settings(
        max_new=max_new,
        min_new=config.min_new_tokens or 0,
        eos=eos,
        pad=pad,
        sample=bool(config.do_sample),
        warpers=warpers,
        stopping=stopping,
        return_dict=bool(kwargs.get("return_dict_in_generate", config.return_dict_in_generate)),
    )
