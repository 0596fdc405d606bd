"""A CPU stand-in for ``vllm serve``, for tests of ``eval=vllm`` on machines without a GPU.

vLLM needs a CUDA build, so CI cannot run it. This program takes the same
command line kit gives ``vllm serve`` and speaks the endpoints Inspect's vLLM
provider uses: ``/health``, ``/v1/models`` (with ``max_model_len``),
``/v1/load_lora_adapter``, ``/v1/unload_lora_adapter``, ``/v1/chat/completions``,
``/v1/completions`` and ``/tokenize``, with bearer-key checks and vLLM's error
shapes (404 for an unknown model, 400 for a rank above ``--max-lora-rank``).
Answers are computed for real, with PEFT on a resident base (kit.lora.resident),
so scores can be compared with the other strategies. It is not vLLM: its
numbers say nothing about vLLM's kernels or speed.

Every start and request is appended to ``$KIT_VLLM_STANDIN_LOG`` (JSON lines)
when set, so tests can check what kit sent.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from http.server import ThreadingHTTPServer
from pathlib import Path

from kit.core.device import ALIASES
from kit.core.errors import KitError
from kit.core.openai_api import (
    JsonHandler,
    completion_response,
    model_entry,
    text_of,
)
from kit.eval.vllm_lora import served_rank
from kit.lora.resident import ResidentBase


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(prog="kit.eval.vllm_standin")
    p.add_argument("command", choices=["serve"])
    p.add_argument("model")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", default=os.environ.get("VLLM_API_KEY"))  # vllm serve reads $VLLM_API_KEY too
    p.add_argument("--dtype", default="float32")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--enable-lora", action="store_true")
    p.add_argument("--max-lora-rank", type=int, default=16)
    p.add_argument("--max-loras", type=int, default=1)
    p.add_argument("--max-model-len", type=int, default=None)
    p.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    p.add_argument("--tensor-parallel-size", type=int, default=1)
    return p.parse_known_args(argv)


def record(event: dict) -> None:
    path = os.environ.get("KIT_VLLM_STANDIN_LOG")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(event) + "\n")


class StandIn:
    def __init__(self, args: argparse.Namespace):

        self.args = args
        dtype = ALIASES.get(args.dtype, "fp32")
        self.resident = ResidentBase(Path(args.model), "cpu", dtype, max_adapters=max(args.max_loras, 1))
        config = json.loads((Path(args.model) / "config.json").read_text())
        self.max_model_len = args.max_model_len or config.get("max_position_embeddings", 2048)
        self.loras: dict[str, tuple[str, str]] = {}  # lora_name -> (lora_path, peft name)

    def models(self) -> dict:
        entry = lambda id_, root, parent: model_entry(id_, "vllm", root=root, parent=parent, max_model_len=self.max_model_len)
        data = [entry(self.args.model, self.args.model, None)]
        data += [entry(name, path, self.args.model) for name, (path, _) in self.loras.items()]
        return {"object": "list", "data": data}

    def load_lora(self, body: dict) -> tuple[int, str]:
        if not self.args.enable_lora:
            return 404, "Not Found"
        name, path = body.get("lora_name"), body.get("lora_path")
        if name in self.loras:
            return 400, f"The lora adapter '{name}' has already been loaded."
        try:
            rank = served_rank(json.loads((Path(path) / "adapter_config.json").read_text()))  # the tensors' largest rank
            if rank > self.args.max_lora_rank:
                return 400, f"LoRA rank {rank} is greater than max_lora_rank {self.args.max_lora_rank}."
            self.loras[name] = (path, self.resident.attach(Path(path)))
        except (KitError, OSError, ValueError, KeyError) as e:
            return 400, f"Loading lora {name} failed: {e}"
        return 200, f"Success: LoRA adapter '{name}' added successfully."

    def generate(self, model: str, prompt: str, body: dict) -> tuple[str, int, int, str, dict | None]:
        import torch

        adapter = None if model == self.args.model else self.loras[model][1]
        tok = self.resident.tokenizer
        ids = tok(prompt, return_tensors="pt", add_special_tokens=False)
        temperature = float(body.get("temperature") or 0.0)
        kwargs = {
            "max_new_tokens": int(body.get("max_tokens") or body.get("max_completion_tokens") or 16),
            "do_sample": temperature > 0,
            "pad_token_id": tok.eos_token_id,
        }
        if temperature > 0:
            kwargs.update(temperature=temperature, top_p=float(body.get("top_p") or 1.0))
            torch.manual_seed(int(body.get("seed") or self.args.seed))
        top = int(body.get("logprobs") or 0)
        if top:
            kwargs.update(output_scores=True, return_dict_in_generate=True)
        with self.resident.lock, torch.inference_mode():
            self.resident.activate(adapter)
            out = self.resident.forward_model(adapter).generate(**ids, **kwargs)
        sequences = out.sequences if top else out
        new = sequences[0, ids["input_ids"].shape[1] :]
        finish = "stop" if len(new) and int(new[-1]) == tok.eos_token_id else "length"
        logprobs = logprobs_of(tok, new, out.scores, top) if top else None
        return tok.decode(new, skip_special_tokens=True), ids["input_ids"].shape[1], len(new), finish, logprobs

    def completion(self, body: dict, chat: bool) -> tuple[int, dict]:
        model = body.get("model")
        if model != self.args.model and model not in self.loras:
            return 404, error(f"The model `{model}` does not exist.", "NotFoundError", 404)
        if chat:
            messages = [{"role": m["role"], "content": text_of(m.get("content"))} for m in body["messages"]]
            prompt = self.resident.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:
            prompt = body["prompt"]
        *answer, logprobs = self.generate(model, prompt, body)
        response = completion_response(model, *answer, chat)
        if not chat and logprobs is not None:
            response["choices"][0]["logprobs"] = logprobs
        return 200, response


def logprobs_of(tok, new, scores, top: int) -> dict:
    """vLLM's completions ``logprobs`` block: each generated token, its log-probability and the
    ``top`` most likely tokens at that step (log-softmax of the raw logits, as vLLM reports them)."""
    import torch

    tokens, token_logprobs, top_logprobs = [], [], []
    for step, token in enumerate(new.tolist()):
        logp = torch.log_softmax(scores[step][0].float(), dim=-1)
        values, indices = logp.topk(top)
        tokens.append(tok.decode([token]))
        token_logprobs.append(float(logp[token]))
        top_logprobs.append({tok.decode([int(i)]): float(v) for v, i in zip(values, indices)})
    return {"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": top_logprobs, "text_offset": [0] * len(tokens)}


def error(message: str, kind: str, code: int) -> dict:
    return {"object": "error", "message": message, "type": kind, "param": None, "code": code}


def handler(standin: StandIn):
    class Handler(JsonHandler):  # quiet; requests go to the record instead
        def authorised(self) -> bool:
            key = standin.args.api_key
            if key and self.headers.get("Authorization") != f"Bearer {key}":
                self.reply(401, {"error": "Unauthorized"})
                return False
            return True

        def do_GET(self):
            record({"event": "request", "method": "GET", "path": self.path})
            if self.path == "/health":
                return self.reply(200, "")
            if not self.authorised():
                return
            if self.path == "/v1/models":
                return self.reply(200, standin.models())
            self.reply(404, error("Not Found", "NotFoundError", 404))

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except ValueError as e:
                return self.reply(400, error(f"invalid JSON: {e}", "BadRequestError", 400))
            record({"event": "request", "method": "POST", "path": self.path, "body": body})
            if not self.authorised():
                return
            if self.path == "/v1/load_lora_adapter":
                return self.reply(*standin.load_lora(body))
            if self.path == "/v1/unload_lora_adapter":
                found = standin.loras.pop(body.get("lora_name"), None)
                return self.reply(200 if found else 404, "Success" if found else "Not Found")
            if self.path in ("/v1/chat/completions", "/v1/completions"):
                return self.reply(*standin.completion(body, chat=self.path.endswith("chat/completions")))
            if self.path == "/tokenize":
                ids = standin.resident.tokenizer(body.get("prompt", ""), add_special_tokens=False)["input_ids"]
                return self.reply(200, {"tokens": ids, "count": len(ids), "max_model_len": standin.max_model_len})
            self.reply(404, error("Not Found", "NotFoundError", 404))

    return Handler


def main(argv: list[str] | None = None) -> int:
    args, unknown = parse_args(sys.argv[1:] if argv is None else argv)
    record({"event": "start", "argv": sys.argv[1:] if argv is None else argv, "unknown": unknown})
    server = ThreadingHTTPServer((args.host, args.port), handler(StandIn(args)))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
