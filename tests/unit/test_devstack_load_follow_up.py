"""The benchmark load generators' follow-up: a request counts only once its follow-up succeeded.

bench_pipeline pays every order it places (POST the order, then confirm its
payment); an order whose payment failed must count as an error, not as placed.
Served by a small aiohttp app on loopback, so the real client code runs.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from devstack import bench

DECLINED = {"3", "7"}


async def _serve() -> tuple[web.AppRunner, str]:
    counter = iter(range(1_000_000))

    async def create(_request: web.Request) -> web.Response:
        return web.json_response({"id": str(next(counter))}, status=201)

    async def pay(request: web.Request) -> web.Response:
        return web.json_response({}, status=402 if request.match_info["id"] in DECLINED else 200)

    app = web.Application()
    app.add_routes([web.post("/orders", create), web.post("/pay/{id}", pay)])
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


def _run(loop_kind: str) -> tuple[bench.LoadResult, list[int]]:
    clients_seen: list[int] = []

    async def main() -> bench.LoadResult:
        runner, url = await _serve()

        async def follow_up(session, created_id: str, client: int) -> str | None:
            clients_seen.append(client)
            async with session.post(f"{url}/pay/{created_id}") as response:
                return None if response.status == 200 else f"pay: HTTP {response.status}"

        def make(_index: int, _number: int):
            return {}, {"items": []}

        try:
            if loop_kind == "closed":
                return await bench.closed_loop("t", f"{url}/orders", make, 3, 30.0,
                                               max_requests=10, id_field="id",
                                               follow_up=follow_up)
            return await bench.open_loop("t", f"{url}/orders", make, 200.0, 10 / 200.0, 3,
                                         id_field="id", follow_up=follow_up)
        finally:
            await runner.cleanup()

    return asyncio.run(main()), clients_seen


def test_closed_loop_counts_only_requests_whose_follow_up_succeeded():
    result, clients = _run("closed")
    assert sorted(result.ok_ids, key=int) == [str(n) for n in range(10) if str(n) not in DECLINED]
    assert result.ok == 8
    assert result.errors == {"pay: HTTP 402": 2}
    assert set(clients) <= {0, 1, 2}


def test_open_loop_counts_only_requests_whose_follow_up_succeeded():
    result, clients = _run("open")
    assert sorted(result.ok_ids, key=int) == [str(n) for n in range(10) if str(n) not in DECLINED]
    assert result.errors == {"pay: HTTP 402": 2}
    assert len(clients) == 10
