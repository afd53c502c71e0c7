"""In-process simulators for the simulator's integration tests, and the calls they send."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import aiohttp
import litellm
from aiohttp import web

from chordal.simulator import ModelProfile, SimConfig, build_app

litellm.suppress_debug_info = True

# A healthy model answering in 10 ms, so tests spend their time on behaviour, not latency.
FAST = ModelProfile(latency_median_s=0.01, latency_sigma=0.0)


class SimServer:
    """A simulator served from its own event loop on a background thread."""

    def __init__(self, config: SimConfig) -> None:
        self._config = config
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.url = ""

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self.runner = web.AppRunner(build_app(self._config), access_log=None)
        self._loop.run_until_complete(self._setup())
        self._started.set()
        self._loop.run_forever()

    async def _setup(self) -> None:
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0, backlog=4096).start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"

    def start(self) -> SimServer:
        """Start serving and wait until the port is bound."""
        self._thread.start()
        assert self._started.wait(10), "simulator did not start"
        return self

    def stop(self) -> None:
        """Stop serving and release the loop."""
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


async def complete(server: SimServer, *, model: str = "gpt-4.1-mini", **kwargs: Any) -> Any:
    """Ask ``server`` for a completion through LiteLLM, without retries."""
    return await litellm.acompletion(
        model=f"openai/{model}",
        api_base=f"{server.url}/v1",
        api_key="sim",
        messages=[{"role": "user", "content": "Plan a trip to Lisbon."}],
        num_retries=0,
        **kwargs,
    )


async def admin_request(server: SimServer, route: str, *, body: Any = None) -> tuple[int, Any]:
    """Call ``route`` (``"PATCH /admin/faults"``) and return the status and JSON body."""
    method, path = route.split(" ")
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, server.url + path, json=body) as response,
    ):
        return response.status, await response.json()


async def post_chat(
    session: aiohttp.ClientSession, server: SimServer, *, model: str = "gpt-5", **extra: Any
) -> tuple[int, dict[str, str], Any]:
    """POST a one-message chat request (``extra`` joins the body) and return the raw reply."""
    headers = extra.pop("headers", None)
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}
    async with session.post(
        f"{server.url}/v1/chat/completions", json=body, headers=headers
    ) as response:
        return response.status, dict(response.headers), await response.json()


def chats(server: SimServer, count: int, **extra: Any) -> list[tuple[int, dict[str, str], Any]]:
    """Send ``count`` chat requests one after another."""

    async def scenario() -> list[tuple[int, dict[str, str], Any]]:
        async with aiohttp.ClientSession() as session:
            return [await post_chat(session, server, **extra) for _ in range(count)]

    return asyncio.run(scenario())
