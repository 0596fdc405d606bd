"""Runtime phase: modifiers trained on one base and kept separate, ``kit serve`` with the real
``openai`` client on loopback, routers, bad input, Inspect through the server, phase.merge."""

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import OFFLINE, run_kit
from wandb_records import artifacts, run_info

pytestmark = pytest.mark.slow
KEY = "test-key-7"
PROMPTS = {
    "parity": "Is 4821 even or odd?",
    "last_digit": "What is the last digit of 4821?",
    "reverse": "Reverse the digits of 482.",
}


def train_modifier_job(kit_cache, tmp_path_factory) -> Path:
    """The bundled three modifiers, one short epoch each, parity scored on 10 held-out rows; trained
    once per session and shared by the serve test modules (a finished job dir is reused)."""
    work = tmp_path_factory.getbasetemp() / "modifiers_shared"
    job = work / "job"
    summary = job / "summary.json"
    if summary.is_file() and json.loads(summary.read_text()).get("status") == "done":
        return job
    work.mkdir(exist_ok=True)
    args = [
        "train",
        "+experiment=modifiers",
        "trainer.epochs=1",
        "phase.modifiers.last_digit.epochs=1",  # the demo gives these two their own budget
        "phase.modifiers.reverse.epochs=1",
        # one epoch at the demo's lr (3e-3, clipped) leaves parity half-trained (a raw prompt then
        # answers its own header): these tests need a parity modifier that answers, not the demo's budget
        "trainer.lr=5e-3",
        "trainer.clip_grad_norm=null",
        "tasks.limit=10",
        "logger=none",
        "phase.modifiers.parity.tasks=[kit/parity]",
        "phase.modifiers.last_digit.tasks=[]",
        "phase.modifiers.reverse.tasks=[]",
        f"hydra.run.dir={job}",
    ]
    proc = run_kit(args, kit_cache, work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return job


@pytest.fixture(scope="module")
def modifier_job(kit_cache, tmp_path_factory) -> Path:
    return train_modifier_job(kit_cache, tmp_path_factory)


def start_server(modifier_job, kit_cache, *args, key=KEY):
    """``python -m kit serve`` in a subprocess (the key from $KIT_API_KEY, never argv); (process, /v1 URL)."""
    env = {**os.environ, **OFFLINE, "KIT_CACHE": str(kit_cache)}
    env.pop("KIT_API_KEY", None)
    if key:
        env["KIT_API_KEY"] = key
    proc = subprocess.Popen(
        [sys.executable, "-m", "kit", "serve", f"serve.registry={modifier_job}", "serve.port=0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    line = proc.stdout.readline()
    if not line.startswith("kit: serving"):
        proc.kill()
        pytest.fail(f"server did not start: {line} {proc.stderr.read()[-3000:]}")
    return proc, line.split(" at ")[-1].strip()


@pytest.fixture(scope="module")
def server(modifier_job, kit_cache):
    """``python -m kit serve`` in a subprocess, API key on, a small body limit; yields its /v1 URL."""
    proc, url = start_server(modifier_job, kit_cache, "serve.max_body_bytes=20000")
    yield url
    proc.terminate()
    try:
        assert proc.wait(timeout=60) == 0  # SIGTERM drains and exits 0
    finally:
        if proc.poll() is None:  # never leave a server behind a failed test
            proc.kill()


def client(url, key=KEY):
    import openai

    return openai.OpenAI(base_url=url, api_key=key, max_retries=0)


def chat(c, model, text):
    return c.chat.completions.create(model=model, messages=[{"role": "user", "content": text}], max_tokens=8)


def test_registry_records_separate_modifiers_on_one_base(modifier_job, tiny_base):
    from kit.core.identity import base_fingerprint
    from kit.train.export import folder_bytes

    registry = json.loads((modifier_job / "modifiers.json").read_text())
    fingerprint = base_fingerprint(tiny_base)
    assert registry["base"] == {"path": str(tiny_base), "fingerprint": fingerprint, "lineage": None}
    assert [m["name"] for m in registry["modifiers"]] == ["parity", "last_digit", "reverse"]
    for m in registry["modifiers"]:
        folder = modifier_job / m["path"]
        assert (folder / "adapter_model.safetensors").is_file() and m["bytes"] == folder_bytes(folder)
        assert m["base_fingerprint"] == fingerprint and m["rank"] == 8
        assert m["training"]["steps"] > 0 and m["training"]["final_loss"] < m["training"]["first_loss"]
    assert (modifier_job / "router_learned.json").is_file()
    summary = json.loads((modifier_job / "summary.json").read_text())
    assert summary["status"] == "done" and set(summary["scores"]) == {"parity/parity"}


def test_openai_client_models_chat_completions_and_auto(server, kit_cache):
    c = client(server)
    assert [m.id for m in c.models.list().data] == ["auto", "base", "parity", "last_digit", "reverse"]
    for name, text in PROMPTS.items():
        routed = chat(c, "auto", text)
        assert routed.model_extra["modifier"] == name and routed.model_extra["route"]["router"] == "rules"
        assert routed.choices[0].message.content == chat(c, name, text).choices[0].message.content
    unrouted = chat(c, "auto", "hello there")
    assert unrouted.model_extra["modifier"] == "base"
    # /v1/completions with the chat template written out answers as the chat endpoint does
    prompt = f"<|im_start|>user\n{PROMPTS['parity']}<|im_end|>\n<|im_start|>assistant\n"
    plain = c.completions.create(model="parity", prompt=prompt, max_tokens=8)
    assert plain.choices[0].text == chat(c, "parity", PROMPTS["parity"]).choices[0].message.content
    # the modifier changes the answers: parity and base disagree on some held-out question
    questions = [f"Is {n} even or odd?" for n in (1234, 4821, 7777, 2050, 9)]
    answers = {m: [chat(c, m, q).choices[0].message.content for q in questions] for m in ("parity", "base")}
    assert answers["parity"] != answers["base"]


def test_concurrent_mixed_requests_match_one_at_a_time(server):
    import httpx

    c = client(server)
    jobs = [(m, f"{PROMPTS[m]}") for m in PROMPTS] * 3 + [("base", PROMPTS["parity"])] * 3
    alone = [chat(c, m, t).choices[0].message.content for m, t in jobs]
    auth = {"Authorization": f"Bearer {KEY}"}  # the counters are for key holders (anyone: liveness only)
    before = httpx.get(server.removesuffix("/v1") + "/health", headers=auth).json()
    together = [None] * len(jobs)

    def ask(i, m, t):
        together[i] = chat(c, m, t).choices[0].message.content

    threads = [threading.Thread(target=ask, args=(i, m, t)) for i, (m, t) in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert together == alone
    after = httpx.get(server.removesuffix("/v1") + "/health", headers=auth).json()
    assert after["requests"] - before["requests"] == len(jobs)
    assert after["generate_calls"] - before["generate_calls"] < len(jobs)  # some rows shared a batch
    assert all(m.model_extra["loaded"] for m in c.models.list().data[2:])


def test_bad_requests_get_4xx_with_a_clear_message(server):
    import httpx
    import openai

    with pytest.raises(openai.AuthenticationError):
        chat(client(server, key="wrong"), "parity", "x")
    with pytest.raises(openai.NotFoundError, match="'nosuch' unknown.*'auto', 'base', 'parity'"):
        chat(client(server), "nosuch", "x")
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client(server).chat.completions.create(model="base", messages=[{"role": "user", "content": "x"}], max_tokens=10**6)
    auth = {"Authorization": f"Bearer {KEY}"}
    bad = httpx.post(f"{server}/chat/completions", content=b"{not json", headers=auth)
    assert bad.status_code == 400 and "not valid JSON" in bad.json()["error"]["message"]
    big = httpx.post(f"{server}/chat/completions", content=b"x" * 50_000, headers=auth)
    assert big.status_code == 413 and "limit is 20000" in big.json()["error"]["message"]
    assert httpx.post(f"{server}/chat/completions", json=[1], headers=auth).status_code == 400
    assert httpx.get(f"{server}/models").status_code == 401
    assert server.startswith("http://127.0.0.1:")  # loopback unless asked
    assert chat(client(server), "base", "still up?").choices  # nothing above took the server down


def test_inspect_and_kit_eval_through_the_server(server, modifier_job, kit_cache, tmp_path):
    """Inspect's openai-api provider scores the served modifier exactly as the direct eval did."""
    direct = json.loads((modifier_job / "summary.json").read_text())["scores"]["parity/parity"]["mean"]
    os.environ["KIT_API_KEY"] = KEY
    try:
        proc = run_kit(
            ["eval", "--server", server, "--model", "auto", "tasks.limit=10", "--log-dir", str(tmp_path)], kit_cache, tmp_path
        )
    finally:
        del os.environ["KIT_API_KEY"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    scores = json.loads((tmp_path / "scores.json").read_text())["scores"]
    assert scores["parity"]["mean"] == direct


def test_routers_learned_and_rules(modifier_job):
    from kit.core.data import bundled, read_jsonl
    from kit.runtime.registry import read_registry
    from kit.runtime.router import LearnedRouter, RulesRouter

    registry = read_registry(modifier_job)
    learned = LearnedRouter.load(registry.learned_router, 0.3)
    rules = RulesRouter(registry.modifiers)
    tests = {
        "parity": "parity_test.jsonl",
        "last_digit": "modifiers/last_digit_test.jsonl",
        "reverse": "modifiers/reverse_test.jsonl",
    }
    for name, file in tests.items():
        for row in read_jsonl(bundled(file))[:30]:
            assert learned.route(row["question"])[0] == name, row
            assert rules.route(row["question"])[0] == name, row
    assert learned.route("Tell me a story about the sea")[0] is None
    assert rules.route("Tell me a story about the sea") == (None, None)


def test_lazy_store_evicts_and_never_reloads_the_base(modifier_job, monkeypatch):
    """In process: preload off, room for 2 of 3 modifiers; the base is loaded once."""

    import kit.runtime.serve.store as store
    from kit.core.config import compose
    from kit.runtime.registry import read_registry
    from kit.runtime.serve.app import ServeApp

    loads = []

    class Counted(store.ResidentBase):
        def __init__(self, *args, **kwargs):
            loads.append(args[0])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(store, "ResidentBase", Counted)
    registry = read_registry(modifier_job)
    cfg = compose("train", ["serve.preload=false", "serve.max_loaded=2", "serve.device=cpu", "serve.dtype=fp32"])
    app = ServeApp(cfg.serve, cfg.router, registry, registry.base)
    assert app.store.loaded() == []
    body = lambda m: {"model": m, "messages": [{"role": "user", "content": PROMPTS.get(m, "hi")}], "max_tokens": 4}
    first = {m: app.complete(body(m), chat=True)[0]["choices"][0]["message"]["content"] for m in PROMPTS}
    assert app.store.loaded() == ["last_digit", "reverse"]  # parity, least recently used, evicted
    again = app.complete(body("parity"), chat=True)[0]["choices"][0]["message"]["content"]
    assert again == first["parity"] and app.store.resident.adapter_loads == 4
    assert len(loads) == 1


def test_serve_refuses_modifiers_of_another_base_and_bad_config(modifier_job, kit_cache, tmp_path):
    other = tmp_path / "other"
    proc = run_kit(
        [
            "train",
            "phase.merge=true",
            "trainer.epochs=1",
            "eval=none",  # W&B offline (the default): the merge run's artifact is checked below
            "verify.after_train=false",
            f"hydra.run.dir={other}",
        ],
        kit_cache,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lineage = json.loads((other / "merged" / "kit_lineage.json").read_text())
    summary = json.loads((other / "summary.json").read_text())
    assert not (other / "adapter").exists() and summary["checkpoint"]["kind"] == "full"
    assert lineage["base"]["path"] == summary["base_model"] and lineage["lora"]["rank"] == 8
    assert lineage["fingerprint"] != lineage["base"]["fingerprint"]
    # W&B lineage: the merge run produced the merged model (by fingerprint, never its weights), the base its input
    runs = {run_info(f)["job_type"]: f for f in (other / "wandb").glob("offline-run-*/run-*.wandb")}
    assert {"train", "merge"} <= set(runs) and "export" not in runs  # the adapter export would log is merged, deleted
    made = {a["type"]: a for a in artifacts(runs["merge"])}
    assert made["merged-model"]["name"] == f"merged-{summary['run_id']}" and not made["merged-model"]["used"]
    assert made["merged-model"]["metadata"]["fingerprint"] == lineage["fingerprint"]
    assert made["merged-model"]["metadata"]["lineage"]["lora"]["rank"] == 8 and made["base-model"]["used"]
    assert list(made["merged-model"]["files"]) == ["kit_model.json"]
    refused = run_kit(
        ["serve", f"serve.registry={modifier_job}", f"serve.base={other / 'merged'}", "serve.port=0"], kit_cache, tmp_path
    )
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines()[-1].startswith("kit: error: modifier 'parity' was trained on another base")
    for args, needle in [
        ([], "serve.registry is unset"),
        (["serve.registry=/nonexistent"], "no modifier registry"),
        ([f"serve.registry={modifier_job}", "router=nosuch"], "nosuch"),
    ]:
        proc = run_kit(["serve", *args, "serve.port=0"], kit_cache, tmp_path)
        assert proc.returncode == 2 and needle in proc.stderr, (args, proc.stderr[-2000:])
    proc = run_kit(["train", "phase=runtime"], kit_cache, tmp_path)
    assert proc.returncode == 2 and "python -m kit serve" in proc.stderr
