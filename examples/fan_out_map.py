"""Dynamic fan-out: ``map`` an async task over a list, at most three at a time.

    python examples/fan_out_map.py

Every item is its own checkpoint (``fetch_size[0]``, ``fetch_size[1]``, ...), so a crash
in the middle of a large batch only re-runs the items that had not finished. Outputs
come back in input order whatever order the items finish in.
"""

from __future__ import annotations

import asyncio

from sayiir_core import Flow, InMemoryBackend, WorkflowClient, run_durable_workflow, task

_running = 0
_peak = 0


@task
def list_pages(site: str) -> list[str]:
    return [f"https://{site}/{page}" for page in ("home", "about", "blog", "shop", "faq", "jobs")]


@task(timeout="5s", retries=2)
async def fetch_size(url: str) -> int:
    global _running, _peak
    _running += 1
    _peak = max(_peak, _running)
    try:
        await asyncio.sleep(0.05 * (len(url) % 3 + 1))  # stands in for an HTTP request
        return len(url) * 100
    finally:
        _running -= 1


@task
def total(sizes: list[int]) -> dict[str, int]:
    return {"pages": len(sizes), "bytes": sum(sizes)}


crawl = Flow("crawl").then(list_pages).map(fetch_size, max_concurrency=3).then(total).build()


def main() -> int:
    backend = InMemoryBackend()
    status = run_durable_workflow(crawl, "crawl-1", "example.com", backend)
    print(f"crawl-1: {status.status} -> {status.output}")
    print(f"at most {_peak} fetches ran at once (max_concurrency=3)")
    assert status.is_completed()
    assert _peak <= 3

    client = WorkflowClient(backend)
    print("checkpoint of item 2:", client.get_task_result("crawl-1", "fetch_size[2]"))
    items = [e.step_key for e in client.history("crawl-1") if e.kind == "task_completed"]
    print("checkpointed steps:", ", ".join(key for key in items if key))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
