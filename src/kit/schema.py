"""Structured-config schema: Hydra checks every composed config against it, so a
wrong type or an unknown key fails at compose time with the key's full name."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


class CheckpointKind(str, Enum):
    full = "full"
    adapter = "adapter"


class LoggerKind(str, Enum):
    wandb = "wandb"
    none = "none"


class WandbMode(str, Enum):
    offline = "offline"
    online = "online"
    disabled = "disabled"


@dataclass
class ModelConfig:
    name: str = MISSING
    path: Optional[str] = None  # a local HF folder; wins over hf_id
    hf_id: Optional[str] = None  # looked up in the local HF cache only, unless network allowed
    allow_network: bool = False  # or KIT_ALLOW_NETWORK=1
    allow_pickle: bool = False  # load *.bin pickles (refused by default)
    trust_remote_code: bool = False
    # load arguments (kit/loader.py)
    loader: str = "auto"  # auto | causal_lm | seq2seq_lm | masked_lm (auto: from config.json)
    dtype: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | float32 | bfloat16 | float16
    device_map: Optional[Any] = None  # passed to from_pretrained (e.g. auto)
    attn_implementation: Optional[str] = None  # eager | sdpa | flash_attention_2
    revision: Optional[str] = None  # hub revision (with hf_id)
    cache_dir: Optional[str] = None  # HF cache to look in (with hf_id)
    load_in_4bit: bool = False  # bitsandbytes + CUDA
    load_in_8bit: bool = False


@dataclass
class CheckpointerConfig:
    kind: CheckpointKind = CheckpointKind.adapter


class VllmServer(str, Enum):
    vllm = "vllm"  # the real `vllm serve` (needs a GPU build of vLLM)
    standin = "standin"  # kit.vllm_standin: same HTTP endpoints, PEFT on CPU (tests only)


@dataclass
class VllmConfig:
    server: VllmServer = VllmServer.vllm
    gpu_memory_utilization: float = 0.9
    tensor_parallel_size: int = 1
    max_loras: int = 4  # adapters in one batch on the server
    max_lora_rank: Optional[int] = None  # None: the largest rank among the adapters evaluated
    max_model_len: Optional[int] = None
    startup_timeout: int = 900  # seconds to wait for /health
    extra_args: List[str] = field(default_factory=list)  # more `vllm serve` flags


@dataclass
class EvalConfig:
    strategy: str = "merge"
    batch_size: int = 32  # Inspect's max_connections: the hf provider's batch size
    max_tokens: int = 8
    temperature: float = 0.0  # 0 -> greedy
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"  # auto: bf16 on CUDA, fp32 on CPU
    base_scores: bool = True  # also score the untrained base (cached per base model)
    tmp_dir: Optional[str] = None  # where merge writes its temporary model (default: job dir)
    max_adapters: int = 4  # adapters kept attached to a resident base (LRU beyond)
    check_restore: bool = True  # merge_in_memory: fingerprint the base after each restore
    vllm: VllmConfig = field(default_factory=VllmConfig)


@dataclass
class ModifierSpec:
    """One runtime modifier of ``phase=modifier``: its dataset and how a rules router spots it."""

    train_file: str = MISSING
    prompt_column: str = "input"
    response_column: str = "output"
    rank: Optional[int] = None  # None: lora.rank
    tasks: List[str] = field(default_factory=list)  # Inspect tasks that score this modifier
    keywords: List[str] = field(default_factory=list)  # rules router: case-insensitive substrings
    patterns: List[str] = field(default_factory=list)  # rules router: case-insensitive regexes


@dataclass
class SampleConfig:
    temperature: float = 0.7
    top_p: float = 0.9
    seed: int = 1234


@dataclass
class VerifyConfig:  # conf/verify/default.yaml explains each key; kit/verify/
    after_train: bool = True
    checks: List[str] = field(default_factory=lambda: ["logits", "generation", "inspect", "adapters", "adapter_folder"])
    probes: int = 4
    max_new_tokens: int = 8
    dtype: str = "auto"
    device: str = "auto"
    fp32_max_abs: float = 1e-4
    margin_ulps: float = 4.0
    sample: SampleConfig = field(default_factory=SampleConfig)
    strategies: List[str] = field(default_factory=lambda: ["merge", "merge_in_memory", "direct"])
    tasks: Optional[List[str]] = None
    limit: int = 8
    rounds: int = 3
    max_rss_growth_mib: float = 16.0


@dataclass
class PhaseConfig:
    name: str = "training"  # training | modifier | runtime (kit/phases.py; runtime: python -m kit serve)
    merge: bool = False  # training: merge the adapter into the base -> <job>/merged, a standalone model
    modifiers: Dict[str, ModifierSpec] = field(default_factory=dict)  # modifier: name -> spec


class RouterKind(str, Enum):
    rules = "rules"  # the modifiers' keywords/patterns, first match in registry order
    learned = "learned"  # bag-of-words centroids learned from the modifiers' own datasets
    none = "none"  # auto always means the base


@dataclass
class RouterConfig:
    kind: RouterKind = RouterKind.rules
    min_score: float = 0.3  # learned: below this cosine similarity, auto means the base


class Batching(str, Enum):
    switch = "switch"  # one request at a time; the adapter is switched per request
    mixed = "mixed"  # requests that arrive together run as one batch with per-row adapters


@dataclass
class ServeConfig:
    registry: Optional[str] = None  # a modifier job dir or its modifiers.json
    base: Optional[str] = None  # serve on this base folder instead of the registry's (fingerprint checked)
    host: str = "127.0.0.1"
    port: int = 8000  # 0: any free port (printed at start)
    api_key: Optional[str] = None  # prefer $KIT_API_KEY or api_key_file (argv is visible to all); unset: no key
    api_key_file: Optional[str] = None  # a file holding the key
    max_body_bytes: int = 1_000_000  # larger requests get 413
    request_timeout_s: float = 300.0  # generation deadline per request (queue wait included): 504 after
    client_timeout_s: float = 30.0  # to send a request's headers, and again its body (408); idle keep-alive
    drain_timeout_s: int = 30  # SIGTERM/Ctrl-C: in-flight requests get this long to finish
    backlog: int = 2048  # listen queue (the stdlib server's was 5)
    max_tokens: int = 64  # when a request does not say
    max_tokens_limit: int = 1024  # larger max_tokens get 400
    preload: bool = True  # attach every modifier at start; false: on first use
    max_loaded: int = 4  # modifiers kept attached (least recently used evicted)
    batching: Batching = Batching.mixed
    batch_wait_ms: int = 5  # mixed: how long the first request waits for company
    max_batch: int = 16
    preempt_tokens: int = 32  # a greedy row this many tokens into its batch yields to waiting requests (0: off)
    device: str = "auto"
    dtype: str = "auto"


@dataclass
class DatasetConfig:
    name: str = MISSING
    train_file: str = MISSING
    prompt_column: str = "input"
    response_column: str = "output"


@dataclass
class TasksConfig:
    specs: List[str] = field(default_factory=list)
    limit: Optional[int] = None


@dataclass
class LoggerConfig:
    kind: LoggerKind = LoggerKind.wandb
    mode: WandbMode = WandbMode.offline
    project: str = "kit"
    entity: Optional[str] = None
    tags: List[str] = field(default_factory=list)


@dataclass
class TrainerConfig:
    device: str = "auto"
    dtype: str = "auto"
    epochs: int = 1
    max_steps_per_epoch: Optional[int] = None
    batch_size: int = 8
    gradient_accumulation_steps: int = 1
    lr: float = 3e-4
    weight_decay: float = 0.0
    warmup_steps: int = 0
    clip_grad_norm: Optional[float] = None
    seed: int = 0
    compile: bool = False
    activation_checkpointing: bool = False
    nproc_per_node: int = 1


@dataclass
class LoraConfig:
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    attn_modules: List[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    apply_to_mlp: bool = True
    apply_to_output: bool = False


@dataclass
class KitConfig:
    name: str = "default"
    model: ModelConfig = field(default_factory=ModelConfig)
    checkpointer: CheckpointerConfig = field(default_factory=CheckpointerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    phase: PhaseConfig = field(default_factory=PhaseConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    router: RouterConfig = field(default_factory=RouterConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    tasks: TasksConfig = field(default_factory=TasksConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)


def register() -> None:
    ConfigStore.instance().store(name="kit_schema", node=KitConfig)
