#!/usr/bin/env python
"""Load on `longlm serve` over loopback, bounded in requests and time, on the embedded model by default.

Starts the installed `longlm serve --port 0`, then measures, each in one run:
  * a long document (--long-tokens of the shipped novel, 12k by default) asked once, then asked again with
    another question: the second request's time to first token against the first's (target: <= 5%);
  * the server's overhead for one medium prompt, with `ask`'s W and G: the client's wall time against the
    server's own prefill + decode for it (target: <= 3%), with `ask --json`'s prefill + decode beside it (a
    fresh process, so its first chunks run cold) and whether the answers are the same;
  * N = 1, 4 and 16 concurrent clients, each sending --requests short streamed requests: completed, 503 and
    other errors, p50/p95 latency and time to first token (target: every request completes or gets a clean 503);
  * the server's RSS after its first request and at the end (target: within 5%).
Prints one line per measurement and the targets met or missed. Loopback only; nothing is downloaded.

Usage: python benchmarks/serve_load.py [-m MODEL] [--long-tokens 12000] [--requests 3] [--timeout 1800]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
NOVEL = ROOT / "samples" / "pride-and-prejudice.txt"
SHORT = "The harbour master counted eleven ships on Monday and nine on Tuesday. How many ships came in all?"


def start(model: str, cache: Path, max_queue: int) -> tuple[subprocess.Popen, str]:
    command = Path(sys.executable).parent / "longlm"
    env = {**os.environ, "LONGLM_CACHE_DIR": str(cache)}
    args = [str(command), "serve", "-m", model, "--port", "0", "--max-queue", str(max_queue)]
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True, env=env)
    said = []
    for line in proc.stderr:  # a first run converts the model first and says so
        said.append(line)
        found = re.search(r"at (http://127\.0\.0\.1:\d+/v1)$", line.strip())
        if found:
            break
    else:
        proc.kill()
        sys.exit(f"serve_load: the server did not start: {''.join(said)}")
    threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep its stderr pipe drained
    return proc, found.group(1)


def rss_gib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def stream(url: str, content: str, max_tokens: int, timeout: float) -> dict:
    """One streamed chat request: status, time to first text, total time, usage (when it completed)."""
    body = {
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    start = time.perf_counter()
    first, usage = None, None
    try:
        with httpx.stream("POST", f"{url}/chat/completions", json=body, timeout=timeout) as response:
            if response.status_code != 200:
                response.read()
                return {"status": response.status_code, "seconds": time.perf_counter() - start}
            for line in response.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                data = json.loads(line[6:])
                if "error" in data:
                    return {"status": "error", "seconds": time.perf_counter() - start, "error": data["error"]}
                if data.get("usage"):
                    usage = data["usage"]
                elif first is None and data["choices"] and _answered(data["choices"][0]):
                    first = time.perf_counter() - start  # the first text, or the end of an empty answer
    except httpx.HTTPError as exc:
        return {"status": f"failed ({type(exc).__name__})", "seconds": time.perf_counter() - start}
    return {"status": 200, "first": first, "seconds": time.perf_counter() - start, "usage": usage}


def _answered(choice: dict) -> bool:
    return bool(choice["delta"].get("content")) or choice.get("finish_reason") is not None


def novel_prefix(tokens: int) -> str:
    """About ``tokens`` tokens of the novel (4 characters a token is close for English prose)."""
    return NOVEL.read_text(encoding="utf-8")[: tokens * 4]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def concurrent(url: str, clients: int, requests: int, timeout: float) -> list[dict]:
    results: list[dict] = []
    lock = threading.Lock()

    def client(number: int) -> None:
        for r in range(requests):
            done = stream(url, f"{SHORT} (client {number}, request {r})", 16, timeout)
            with lock:
                results.append(done)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def report_clients(clients: int, results: list[dict]) -> bool:
    ok = [r for r in results if r["status"] == 200]
    busy = sum(r["status"] == 503 for r in results)
    errors = len(results) - len(ok) - busy
    latency = [r["seconds"] for r in ok]
    first = [r["first"] for r in ok if r.get("first") is not None]
    print(
        f"clients={clients:<3} requests={len(results):<4} completed={len(ok):<4} 503={busy:<3} errors={errors:<3} "
        f"latency p50={percentile(latency, 50):.2f}s p95={percentile(latency, 95):.2f}s "
        f"ttft p50={percentile(first, 50):.2f}s p95={percentile(first, 95):.2f}s"
    )
    return errors == 0


def ask_seconds(model: str, cache: Path, document: Path, question: str, max_tokens: int) -> tuple[float, dict]:
    """`ask --json --no-cache`: its prefill + decode seconds and its plan (W, G)."""
    env = {**os.environ, "LONGLM_CACHE_DIR": str(cache)}
    args = ["longlm", "ask", str(document), question, "-m", model, "--json", "--no-cache"]
    done = subprocess.run([*args, "--max-new-tokens", str(max_tokens)], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.exit(f"serve_load: ask failed: {done.stderr[-2000:]}")
    record = json.loads(done.stdout)
    return record["timings"]["prefill"] + record["timings"]["decode"], record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-m", "--model", default="default")
    parser.add_argument("--long-tokens", type=int, default=12_000)
    parser.add_argument("--medium-tokens", type=int, default=3_000)
    parser.add_argument("--requests", type=int, default=3, help="short requests per client (default 3)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds any one request may take")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs; model {args.model}")
    with tempfile.TemporaryDirectory(prefix="serve-load-") as name:
        cache = Path(name)
        targets = run_all(args, cache)
    for line in targets:
        print(line)


def run_all(args, cache: Path) -> list[str]:
    from longlm_cli.answering.templates import load_template, user_message
    from longlm_cli.documents import read_documents

    proc, url = start(args.model, cache, max_queue=8)
    targets = []
    try:
        warm = stream(url, SHORT, 4, args.timeout)
        after_first = rss_gib(proc.pid)
        print(f"first request: {warm['seconds']:.2f}s; server RSS {after_first:.2f} GiB")
        long_doc = novel_prefix(args.long_tokens)
        ask = load_template("ask")
        once = stream(url, user_message(ask, long_doc, "Who is Mr. Bingley?"), 8, args.timeout)
        again = stream(url, user_message(ask, long_doc, "Who is Mr. Darcy?"), 8, args.timeout)
        if once["status"] != 200 or again["status"] != 200:
            sys.exit(f"serve_load: the long requests failed: {once} {again}")
        after_long = rss_gib(proc.pid)
        ratio = again["first"] / once["first"]
        print(
            f"long document: {once['usage']['prompt_tokens']:,} tokens, first ttft {once['first']:.1f}s; "
            f"again with another question: ttft {again['first']:.2f}s "
            f"({again['usage']['prompt_tokens_details']['cached_tokens']:,} tokens reused)"
        )
        targets.append(f"target repeated long document ttft <= 5% of its first: {ratio:.1%} {_met(ratio <= 0.05)}")
        medium = cache / "medium.txt"
        medium.write_text(novel_prefix(args.medium_tokens)[-args.medium_tokens * 4 :])
        question = "Who speaks first in this passage?"
        asked, record = ask_seconds(args.model, cache / "ask", medium, question, 32)
        content = user_message(load_template("ask"), read_documents([str(medium)]).text, question)
        plan = {"window": record["plan"]["W"], "group_size": record["plan"]["G"]}
        served, answer = _timed_plain(url, content, 32, plan, args.timeout)
        work = answer["longlm"]["timings"]["prefill"] + answer["longlm"]["timings"]["decode"]
        overhead = served / work - 1
        same = answer["choices"][0]["message"]["content"] == record["answer"]
        print(
            f"medium prompt ({record['usage']['prompt_tokens']:,} tokens, {record['usage']['answer_tokens']} answer "
            f"tokens): ask's prefill + decode {asked:.2f}s (a fresh process); the server's {work:.2f}s, its client's "
            f"wall time {served:.2f}s; the same answer: {same}"
        )
        targets.append(
            f"target server overhead <= 3% (client wall time over the same prefill + decode): {overhead:+.1%} "
            f"{_met(overhead <= 0.03)}"
        )
        lost = False
        print(f"server RSS after the medium prompt {rss_gib(proc.pid):.2f} GiB")
        for clients in (1, 4, 16):
            lost |= not report_clients(clients, concurrent(url, clients, args.requests, args.timeout))
            print(f"server RSS after {clients} clients {rss_gib(proc.pid):.2f} GiB")
        targets.append(f"target no request lost (completed or a clean 503): {_met(not lost)}")
        end = rss_gib(proc.pid)
        growth = end / after_first - 1
        print(
            f"server RSS at the end {end:.2f} GiB; after the long document {after_long:.2f} GiB (the end "
            f"{end / after_long - 1:+.1%} from there: the KV cache of the latest prompt is kept for reuse)"
        )
        targets.append(
            f"target RSS at the end within 5% of after the first request: {growth:+.1%} {_met(growth <= 0.05)}"
        )
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    return targets


def _timed_plain(url: str, content: str, max_tokens: int, plan: dict, timeout: float) -> tuple[float, dict]:
    """A non-streamed request with ``plan``'s W and G (as ask ran), on a document the server has not seen."""
    body = {"messages": [{"role": "user", "content": content}], "max_tokens": max_tokens, "longlm": plan}
    start = time.perf_counter()
    response = httpx.post(f"{url}/chat/completions", json=body, timeout=timeout)
    response.raise_for_status()
    return time.perf_counter() - start, response.json()


def _met(ok: bool) -> str:
    return "met" if ok else "MISSED"


if __name__ == "__main__":
    main()
