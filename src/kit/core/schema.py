"""Structured-config schema: Hydra checks every composed config against it, so a
wrong type or an unknown key fails at compose time with the key's full name."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


# Closed sets: an unknown value fails at compose time in one line naming the key (kit.core.config.one_line).
class Dtype(StrEnum):
    auto = "auto"  # bf16 on a CUDA GPU that supports it, else fp32 (kit.core.device)
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"
    float32 = "float32"  # the torch names are aliases of the short ones
    bfloat16 = "bfloat16"
    float16 = "float16"


class Loader(StrEnum):
    auto = "auto"  # from config.json (kit.core.model.loader)
    causal_lm = "causal_lm"
    seq2seq_lm = "seq2seq_lm"
    masked_lm = "masked_lm"


class Strategy(StrEnum):  # kit.eval.strategies.STRATEGIES (the registry)
    auto = "auto"  # the fastest correct one for the hardware and the sweep (kit.eval.strategies.auto)
    merge = "merge"
    merge_in_memory = "merge_in_memory"
    direct = "direct"
    vllm = "vllm"
    none = "none"


class Phase(StrEnum):  # the options of conf/phase/ (a LoRA's life); each lists its kit.job.phases
    training = "training"
    modifier = "modifier"
    runtime = "runtime"
    compress = "compress"
    lifecycle = "lifecycle"


class Check(StrEnum):  # kit.verify.CHECKS (the registry)
    logits = "logits"
    generation = "generation"
    inspect = "inspect"
    adapters = "adapters"
    adapter_folder = "adapter_folder"


class CheckpointKind(str, Enum):
    full = "full"
    adapter = "adapter"


class AdapterDtype(str, Enum):
    fp32 = "fp32"  # LoRA weights + AdamW state in fp32 while the frozen base is in the training dtype
    same = "same"  # the training dtype for all (torchtune's recipe as shipped)


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
    path: Optional[str] = MISSING  # a local HF folder; wins over hf_id
    hf_id: Optional[str] = MISSING  # looked up in the local HF cache only, unless network allowed
    gguf_file: Optional[str] = MISSING  # a .gguf file in model.path: converted once to a cached HF folder (kit.core.model.gguf)
    allow_network: bool = False  # or KIT_ALLOW_NETWORK=1
    allow_pickle: bool = False  # load *.bin pickles (refused by default)
    trust_remote_code: bool = False
    # load arguments (kit/core/model/loader.py)
    loader: Loader = Loader.auto  # auto | causal_lm | seq2seq_lm | masked_lm (auto: from config.json)
    dtype: Dtype = Dtype.auto  # auto (bf16 on CUDA, fp32 on CPU) | float32 | bfloat16 | float16
    device_map: Optional[Any] = None  # passed to from_pretrained (e.g. auto)
    attn_implementation: Optional[str] = None  # eager | sdpa | flash_attention_2
    revision: Optional[str] = None  # hub revision (with hf_id)
    cache_dir: Optional[str] = None  # HF cache to look in (with hf_id)
    load_in_4bit: bool = False  # bitsandbytes + CUDA
    load_in_8bit: bool = False


@dataclass
class CheckpointerConfig:
    kind: CheckpointKind = MISSING


class VllmServer(str, Enum):
    vllm = "vllm"  # the real `vllm serve` (needs a GPU build of vLLM)
    standin = "standin"  # kit.eval.vllm_standin: same HTTP endpoints, PEFT on CPU (tests only)


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
    strategy: Strategy = MISSING
    batch_size: int = 32  # requests per generate call (peft/ provider's own; hf and vllm: max_connections)
    max_connections: Optional[int] = None  # Inspect's samples in flight; None: batch_size
    max_tokens: int = 8
    temperature: float = 0.0  # 0 -> greedy
    seed: int = 0
    device: str = "auto"
    dtype: Dtype = Dtype.auto  # auto: bf16 on CUDA, fp32 on CPU
    base_scores: bool = True  # also score the untrained base (cached per base model)
    tmp_dir: Optional[str] = None  # where merge writes its temporary model (default: job dir)
    max_adapters: int = 4  # adapters kept attached to a resident base (LRU beyond)
    check_restore: bool = True  # merge_in_memory: fingerprint the base after each restore
    resume: bool = True  # reuse the samples an interrupted attempt of the same eval scored (kit.eval.resume)
    vllm: VllmConfig = field(default_factory=VllmConfig)


@dataclass
class ModifierSpec:
    """One runtime modifier of ``phase=modifier``: its dataset and how a rules router spots it."""

    train_file: str = MISSING
    prompt_column: str = "input"
    response_column: str = "output"
    rank: Optional[int] = None  # None: lora.rank
    epochs: Optional[int] = None  # None: trainer.epochs (tasks differ in how long they take to learn)
    lr: Optional[float] = None  # None: trainer.lr
    tasks: List[str] = field(default_factory=list)  # Inspect tasks that score this modifier
    keywords: List[str] = field(default_factory=list)  # rules router: case-insensitive substrings
    patterns: List[str] = field(default_factory=list)  # rules router: case-insensitive regexes


@dataclass
class SampleConfig:
    temperature: float = MISSING
    top_p: float = MISSING
    seed: int = MISSING


@dataclass
class VerifyConfig:  # conf/verify/default.yaml explains each key; kit.verify
    after_train: bool = MISSING
    required: bool = MISSING  # a failed verify ends the job unverified (not done), exit status 1
    checks: List[Check] = MISSING
    probes: int = MISSING
    max_new_tokens: int = MISSING
    dtype: Dtype = MISSING
    device: str = MISSING
    logit_ulps: float = MISSING
    logit_abs_floor: float = MISSING
    margin_ulps: float = MISSING
    rounding_factor: float = MISSING
    sample: SampleConfig = field(default_factory=SampleConfig)
    strategies: List[Strategy] = MISSING
    tasks: Optional[List[str]] = MISSING
    limit: int = MISSING
    rounds: int = MISSING
    max_rss_growth_mib: float = MISSING


class CompressFormat(StrEnum):  # kit.core.model.compress.FORMATS
    nf4 = "nf4"
    int8 = "int8"
    gguf_q8_0 = "gguf_q8_0"
    gguf_q4_0 = "gguf_q4_0"


@dataclass
class CompressConfig:
    """``phase=compress``: the base (a merged job's ``<job>/merged`` or any model folder) quantized."""

    format: CompressFormat = CompressFormat.nf4
    nf4_block_size: int = 64  # weights per NF4 block (torchtune's QLoRA uses 64)
    # block scales per scale group (torchtune: 256); a weight is quantized only when its size is a multiple
    # of nf4_block_size * this, so the tiny model's 64-wide layers need 16 (conf/experiment/lifecycle.yaml)
    nf4_scaler_block_size: int = 256
    heldout_file: str = "${kit.bundled:parity_test.jsonl}"  # KL / perplexity text: prompt + response rows
    heldout_rows: int = 32  # rows of heldout_file measured (0: none, no KL/perplexity)
    dequantized: bool = False  # also write <job>/dequantized/: dequant(Wq) as a plain base (model.path=...)


@dataclass
class LifecycleConfig:
    """``phase=lifecycle``: where its table projects the bytes it measured (a folder with a config.json)."""

    project_to: Optional[str] = "${kit.bundled:shapes/llama3_1_8b}"  # Llama-3.1-8B's architecture (no weights)


@dataclass
class PhaseConfig:
    name: Phase = MISSING  # training | modifier | runtime (python -m kit serve) | compress | lifecycle
    pipeline: List[str] = MISSING  # the job's phases in order, by name (kit.job.phases: train, export, ...)
    merge: bool = False  # training: merge the adapter into the base -> <job>/merged, a standalone model
    modifiers: Dict[str, ModifierSpec] = field(default_factory=dict)  # modifier: name -> spec
    compress: CompressConfig = field(default_factory=CompressConfig)  # compress: format and measurement
    lifecycle: LifecycleConfig = field(default_factory=LifecycleConfig)  # lifecycle: its table's projection


class RouterKind(str, Enum):
    rules = "rules"  # the modifiers' keywords/patterns, first match in registry order
    learned = "learned"  # bag-of-words centroids learned from the modifiers' own datasets
    none = "none"  # auto always means the base


@dataclass
class RouterConfig:
    kind: RouterKind = MISSING
    min_score: float = 0.3  # learned: below this cosine similarity, auto means the base


class Batching(str, Enum):
    switch = "switch"  # one request at a time; the adapter is switched per request
    mixed = "mixed"  # requests that arrive together run as one batch with per-row adapters


@dataclass
class ServeConfig:
    registry: Optional[str] = MISSING  # a modifier job dir or its modifiers.json
    base: Optional[str] = MISSING  # serve on this base folder instead of the registry's (fingerprint checked)
    host: str = MISSING
    port: int = MISSING  # 0: any free port (printed at start)
    api_key_file: Optional[str] = MISSING  # a file holding the key; else $KIT_API_KEY; neither: no key
    max_body_bytes: int = MISSING  # larger requests get 413
    request_timeout_s: float = MISSING  # generation deadline per request (queue wait included): 504 after
    client_timeout_s: float = MISSING  # to send a request's headers, and again its body (408); idle keep-alive
    drain_timeout_s: int = MISSING  # SIGTERM/Ctrl-C: in-flight requests get this long to finish
    backlog: int = MISSING  # listen queue (the stdlib server's was 5)
    max_tokens: int = MISSING  # when a request does not say
    max_tokens_limit: int = MISSING  # larger max_tokens get 400
    preload: bool = MISSING  # attach every modifier at start; false: on first use
    max_loaded: int = MISSING  # modifiers kept attached (least recently used evicted)
    batching: Batching = MISSING
    batch_wait_ms: int = MISSING  # mixed: how long the first request waits for company
    max_batch: int = MISSING
    preempt_tokens: int = MISSING  # a greedy row this many tokens into its batch yields to waiting requests (0: off)
    device: str = MISSING
    dtype: Dtype = MISSING


@dataclass
class DatasetConfig:
    name: str = MISSING
    train_file: str = MISSING
    prompt_column: str = MISSING
    response_column: str = MISSING


@dataclass
class TasksConfig:
    specs: List[str] = field(default_factory=list)
    limit: Optional[int] = MISSING


@dataclass
class LoggerConfig:
    kind: LoggerKind = MISSING
    mode: WandbMode = MISSING
    project: str = MISSING
    entity: Optional[str] = MISSING
    tags: List[str] = field(default_factory=list)


@dataclass
class TrainerConfig:
    device: str = MISSING
    dtype: Dtype = MISSING
    epochs: int = MISSING
    max_steps_per_epoch: Optional[int] = MISSING
    batch_size: int = MISSING
    gradient_accumulation_steps: int = MISSING
    lr: float = MISSING
    weight_decay: float = MISSING
    warmup_steps: int = MISSING
    clip_grad_norm: Optional[float] = MISSING
    seed: int = MISSING
    compile: bool = MISSING
    activation_checkpointing: bool = MISSING
    nproc_per_node: int = MISSING
    adapter_dtype: AdapterDtype = MISSING  # LoRA weights + AdamW state (kit.train.training)


@dataclass
class LoraConfig:
    rank: int = MISSING
    alpha: float = MISSING
    dropout: float = MISSING
    attn_modules: List[str] = MISSING
    apply_to_mlp: bool = MISSING
    apply_to_output: bool = MISSING


@dataclass
class LauncherConfig:
    # true: a submitit_slurm sweep submits every job, writes <sweep>/manifest.json and exits;
    # `kit status` / `kit collect` follow it. How a job runs, not what: outside the run id.
    detach: bool = False


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
    launcher: LauncherConfig = field(default_factory=LauncherConfig)


def register() -> None:
    ConfigStore.instance().store(name="kit_schema", node=KitConfig)
