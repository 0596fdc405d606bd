"""Issue 14 on the tiny base, in process (no CLI, no training): the in-memory restore is
checked bit-exactly by on-device checksums, spare LoRA modules are refilled without
changing what an adapter computes, a session owns its resident bases, eval=auto
records its choice, the peft provider batches by its own batch size, and preflight
refuses LoRA targets vLLM does not serve."""

from pathlib import Path

import pytest
import torch

from kit.core.errors import KitError
from kit.core.model.snapshot import Snapshot, checksums
from kit.eval.session import EvalSession, current
from kit.lora.resident import ResidentBase

PROMPT = "Is 12 even or odd?"


def make_adapter(base: Path, out: Path, rank: int, seed: int) -> Path:
    """A real PEFT adapter of the tiny base with non-zero B (merging changes the weights)."""
    from peft import LoraConfig, get_peft_model

    from kit.core.model.loader import load_model

    model = get_peft_model(load_model(base), LoraConfig(r=rank, lora_alpha=2 * rank, target_modules="all-linear"))
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.normal_(0, 0.3)
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def adapters(tiny_base, tmp_path_factory):
    where = tmp_path_factory.mktemp("adapters")
    return [make_adapter(tiny_base, where / f"a{i}", rank, i) for i, rank in enumerate([4, 8, 4])]


def logits(resident, name, merged):
    ids = resident.tokenizer(PROMPT, return_tensors="pt")
    with resident.lock, torch.inference_mode():
        resident.activate(name, merged=merged)
        model = resident.peft if name else resident.model
        return model(**ids).logits.clone()


def fresh_logits(base, adapter):
    """The adapter on a resident base of its own, freshly loaded by PEFT (and copied into its
    fused LoRA slot): what a refill must reproduce bit for bit. That the fused path computes
    PEFT's own logits is tests/test_fused_lora.py's."""
    fresh = ResidentBase(base, "cpu", "fp32")
    return logits(fresh, fresh.attach(adapter), merged=False)


def test_refilled_spare_modules_compute_exactly_as_a_fresh_load(tiny_base, adapters):
    resident = ResidentBase(tiny_base, "cpu", "fp32", max_adapters=1)
    a0, a1, a2 = adapters  # ranks 4, 8, 4: a2 takes over a0's evicted modules
    resident.attach(a0)
    resident.attach(a1)
    assert resident.reused == 0 and len(resident.spares) == 1
    name = resident.attach(a2)
    assert resident.reused == 1, "a2 has a0's shapes: its modules were refilled, not built"
    assert list(resident.peft.peft_config) == [name], "evicted adapters leave PEFT; their modules stay spare"
    expected = fresh_logits(tiny_base, a2)
    assert torch.equal(logits(resident, name, merged=False), expected)
    before = resident.fingerprint()
    merged = logits(resident, name, merged=True)
    assert torch.allclose(merged, expected, atol=1e-4)
    with resident.lock:
        resident.restore()
    assert resident.fingerprint() == before
    name0 = resident.attach(a0)  # back to a0 through a2's modules: a0's own weights again
    assert torch.equal(logits(resident, name0, merged=False), fresh_logits(tiny_base, a0))


def test_refill_of_a_broken_file_changes_nothing(tiny_base, adapters, tmp_path):
    import shutil

    resident = ResidentBase(tiny_base, "cpu", "fp32", max_adapters=1)
    resident.attach(adapters[0])
    name1 = resident.attach(adapters[1])  # a0's modules now spare
    broken = shutil.copytree(adapters[2], tmp_path / "broken")
    weights = broken / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(KitError, match="unreadable"):
        resident.attach(broken)
    assert len(resident.spares) == 1 and list(resident.attached) == [name1]
    assert torch.equal(logits(resident, name1, merged=False), fresh_logits(tiny_base, adapters[1]))


def test_restore_check_catches_a_one_ulp_difference(tiny_base, adapters, monkeypatch):
    """The cheap on-device check must fail if a restore ever stops being bit-exact."""
    resident = ResidentBase(tiny_base, "cpu", "fp32")
    name = resident.attach(adapters[0])
    with resident.lock:
        resident.activate(name, merged=True)
        resident.restore()  # exact: passes
        resident.activate(name, merged=True)
    original = Snapshot.restore

    def off_by_one_ulp(self, model):
        original(self, model)
        from kit.core.model.snapshot import get_param

        with torch.no_grad():
            flat = get_param(model, self.names[-1]).view(-1)
            flat[7] = torch.nextafter(flat[7], flat[7] + 1)

    monkeypatch.setattr(Snapshot, "restore", off_by_one_ulp)
    with resident.lock, pytest.raises(KitError, match="differ from their snapshot.*bit-exact"):
        resident.restore()


def test_checksums_are_order_free_and_see_one_ulp():
    t = torch.randn(1000)
    before = checksums([t])
    assert checksums([t.flip(0).flip(0)]) == before
    t[123] = torch.nextafter(t[123], torch.tensor(float("inf")))
    assert checksums([t]) != before
    half = torch.randn(64).to(torch.bfloat16)
    assert checksums([half]) == checksums([half.clone()])


def test_snapshot_says_where_it_lives(tiny_base):
    from kit.core.model.loader import load_model

    model = load_model(tiny_base)
    snap = Snapshot.take(model, ["model.layers.0.self_attn.q_proj"])
    assert snap.where == "device" and "CPU memory" in snap.why  # CPU weights: the snapshot is beside them
    assert snap.verify(model) == []


def test_session_owns_its_bases_and_counts_loads(tiny_base):
    assert current() is None
    with EvalSession() as session:
        assert current() is session
        first = session.resident(tiny_base, "cpu", "fp32")
        assert session.resident(tiny_base, "cpu", "fp32") is first and session.base_loads == 1
        with EvalSession() as inner:  # nothing shared between sessions
            assert inner.resident(tiny_base, "cpu", "fp32") is not first and inner.base_loads == 1
        assert current() is session
    assert current() is None and session.residents == {}


def test_peft_provider_batches_by_its_own_batch_size(tiny_base, adapters, tmp_path):
    """batch_size=2 with 8 samples in flight: no generate call takes more than 2 rows."""
    from inspect_ai import eval as inspect_eval
    from inspect_ai.model import GenerateConfig, get_model

    from kit.eval.providers.peft_api import AdapterView

    rows = []
    original = AdapterView.generate

    def counting(self, *args, **kwargs):
        rows.append(kwargs["input_ids"].shape[0] if "input_ids" in kwargs else args[0].shape[0])
        return original(self, *args, **kwargs)

    AdapterView.generate = counting
    try:
        with EvalSession() as session:
            model = get_model(
                f"peft/{adapters[0]}",
                base=str(tiny_base),
                do_sample=False,
                memoize=False,
                batch_size=2,
                config=GenerateConfig(max_connections=8),
            )
            logs = inspect_eval(
                ["kit/parity"], model=model, limit=8, max_tokens=2, max_connections=8, log_dir=str(tmp_path), display="none"
            )
            model.api.close()
        assert logs[0].status == "success" and session.base_loads == 1
    finally:
        AdapterView.generate = original
    assert sum(rows) == 8 and max(rows) <= 2 and len(rows) >= 4, rows


def eval_cfg(**over):
    from omegaconf import OmegaConf

    from kit.core.schema import EvalConfig

    cfg = OmegaConf.structured(EvalConfig())
    for k, v in over.items():
        OmegaConf.update(cfg, k, v)
    return cfg


def ctx_for(adapter: Path, **over):
    from kit.eval.context import EvalContext

    return EvalContext("adapter", adapter, adapter, [], adapter, eval_cfg(**over), adapter)


def test_auto_measures_on_this_machine_and_caches_the_figures(tiny_base, adapters, monkeypatch):
    """eval=auto times direct and merge_in_memory on the eval's first samples on the resident
    base (one load), checks both give the merged model's tokens, records the figures, and
    reuses them for the next eval of this base, device, dtype and adapter shape."""
    from kit.eval import auto_probe
    from kit.eval.context import EvalContext
    from kit.eval.strategies import auto

    ctx = EvalContext("adapter", adapters[0], tiny_base, ["kit/parity"], tiny_base, eval_cfg(device="cpu"), tiny_base, limit=20)
    calls = []
    real = auto_probe.measure
    monkeypatch.setattr(auto_probe, "measure", lambda *a: calls.append(1) or real(*a))
    with EvalSession() as session:
        strategy, why, evidence = auto.choose(ctx)
        again = auto.choose(ctx)
        assert session.base_loads == 1
    assert strategy in auto_probe.CANDIDATES and why.startswith("measured on this machine (cpu, fp32")
    assert evidence["eval_samples"] == 20 and evidence["probe_samples"] == auto_probe.PROBE_SAMPLES
    for name, f in evidence["candidates"].items():
        assert f["batch_s"] > 0 and f["agrees_with_merged"] == auto_probe.PROBE_SAMPLES, (name, f)
    assert evidence["candidates"]["merge_in_memory"]["setup_s"] > 0  # the merge and restore are timed
    assert len(calls) == 1 and again[2]["cached"] and again[0] == strategy  # measured once
    assert auto.choose(EvalContext("full", tiny_base, tiny_base, [], tiny_base, eval_cfg(), tiny_base))[0] == "merge"
    assert auto.resolve(ctx_for(adapters[0], strategy="merge")) == ("merge", "set by eval=merge", None)


def test_auto_decides_by_predicted_time_and_agreement():
    from kit.eval.auto_probe import decide

    def record(direct_batch, mim_setup, agree=4):
        return {
            "probe_samples": 4,
            "device": "cpu",
            "dtype": "fp32",
            "candidates": {
                "direct": {"setup_s": 0.0, "batch_s": direct_batch, "agrees_with_merged": agree},
                "merge_in_memory": {"setup_s": mim_setup, "batch_s": 0.1, "agrees_with_merged": 4},
            },
        }

    assert decide(record(0.12, 1.0), 8)[0] == "direct"  # a short eval: the merge costs more than it saves
    assert decide(record(0.12, 1.0), 10_000)[0] == "merge_in_memory"  # a long one: base speed wins
    assert decide(record(0.095, 0.0), 10_000)[0] == "merge_in_memory"  # 5 % faster is a tie: keep the merged model
    strategy, why, evidence = decide(record(0.01, 1.0, agree=3), 8)  # faster but other tokens: never chosen
    assert strategy == "merge_in_memory" and "['direct'] gave other tokens" in why
    assert evidence["predicted_s"] == {"direct": 0.02, "merge_in_memory": 1.2}


def test_preflight_refuses_lora_vllm_cannot_serve_before_training():
    from kit.core.config import compose
    from kit.job.preflight import check_inputs

    with pytest.raises(KitError, match=r"vLLM refuses LoRA on 'lm_head'.*lora.apply_to_output=false"):
        check_inputs(compose("train", ["eval=vllm", "logger=none"]))
    check_inputs(compose("train", ["eval=vllm", "lora.apply_to_output=false", "logger=none"]))
    check_inputs(compose("train", ["eval=vllm", "phase.merge=true", "logger=none"]))  # a merged model: no LoRA
    check_inputs(compose("train", ["eval=vllm", "eval.vllm.server=standin", "logger=none"]))  # PEFT stand-in
