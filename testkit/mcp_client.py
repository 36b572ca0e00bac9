"""The gateway's /mcp endpoint driven by the official MCP Python SDK's client (PyPI `mcp`),
as an MCP host would: the session the MCP integration test (gateway/tests/api/mcp.rs) runs.

Prints the session as JSON lines (a transcript for humans and for the Rust test) and exits
non-zero at the first expectation that does not hold.

    mcp_client.py --url http://127.0.0.1:PORT/mcp --token JWT --other-task ID
"""

import argparse
import asyncio
import json
import sys

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client


def say(step, **fields):
    print(json.dumps({"step": step, **fields}), flush=True)


def expect(cond, what):
    if not cond:
        say("FAILED", what=what)
        sys.exit(1)


def transport(url, token):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    # Bounded: no step of this session waits on the gateway for long.
    timeout = httpx2.Timeout(20.0, read=60.0)
    return streamable_http_client(url, http_client=create_mcp_http_client(headers=headers, timeout=timeout))


def structured(result):
    if result.structured_content is not None:
        return result.structured_content
    return json.loads(result.content[0].text)


async def session(url, token, other_task):
    # Without a token: the gateway answers 401 before any MCP exchange.
    async with httpx2.AsyncClient(timeout=10.0) as http:
        r = await http.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
                            headers={"Accept": "application/json, text/event-stream"})
        say("no_token", status=r.status_code, www_authenticate=r.headers.get("www-authenticate"))
        expect(r.status_code == 401, "a request without a token is refused with 401")
    refused = None
    try:
        async with Client(transport(url, None), read_timeout_seconds=20) as c:
            await c.list_tools()
    except BaseException as e:  # the SDK wraps transport failures in exception groups
        refused = type(e).__name__
    say("client_without_token", refused=refused)
    expect(refused is not None, "the SDK client cannot use the server without a token")

    async with Client(transport(url, token), read_timeout_seconds=60) as c:
        tools = sorted(t.name for t in (await c.list_tools()).tools)
        say("list_tools", tools=tools)
        expect(tools == ["cancel_task", "follow_task", "get_task", "list_tasks", "run_mandate"], "the five tools")

        run = await c.call_tool("run_mandate", {"mandate": "MCP session: summarise what you know", "max_ticks": 2})
        task = structured(run)
        say("run_mandate", is_error=run.is_error, correlation_id=task.get("correlation_id"), status=task.get("status"))
        expect(not run.is_error and task["status"] == "in_queue", "run_mandate answers the queued task at once")
        tid = task["correlation_id"]

        progress = []

        async def on_progress(p, total, message):
            progress.append({"progress": p, "total": total, "message": message})

        followed = await c.call_tool("follow_task", {"correlation_id": tid, "wait_seconds": 60},
                                     progress_callback=on_progress)
        end = structured(followed)
        say("follow_task", status=end.get("status"), tick=end.get("tick"), progress=progress)
        expect(end["status"] == "completed", "the mandate runs to completion")
        expect(len(progress) >= 1, "follow_task sends progress notifications")

        got = structured(await c.call_tool("get_task", {"correlation_id": tid}))
        say("get_task", status=got["status"], success=(got.get("result") or {}).get("success"))
        expect(got["status"] == "completed" and got["result"] is not None, "get_task shows the result")

        second = structured(await c.call_tool("run_mandate", {"mandate": "MCP session: a task to cancel", "max_ticks": 50}))
        cancelled = await c.call_tool("cancel_task", {"correlation_id": second["correlation_id"]})
        after = structured(cancelled)
        say("cancel_task", is_error=cancelled.is_error, status=after.get("status"),
            cancel_requested=after.get("status") == "in_progress")
        expect(not cancelled.is_error, "cancel_task of your own task is accepted")
        ended = structured(await c.call_tool("follow_task", {"correlation_id": second["correlation_id"], "wait_seconds": 60}))
        say("cancelled_task_ended", status=ended["status"])
        expect(ended["status"] == "cancelled", "the cancelled task ends cancelled")

        again = await c.call_tool("cancel_task", {"correlation_id": second["correlation_id"]})
        say("cancel_again", is_error=again.is_error, text=again.content[0].text)
        expect(again.is_error and again.content[0].text == "the task is already cancelled",
               "a second cancel is the REST 409's detail")

        for tool in ("get_task", "cancel_task", "follow_task"):
            theirs = await c.call_tool(tool, {"correlation_id": other_task})
            say("other_users_task", tool=tool, is_error=theirs.is_error, text=theirs.content[0].text,
                status=(theirs.structured_content or {}).get("status"))
            expect(theirs.is_error and theirs.content[0].text == "no such resource"
                   and theirs.structured_content["status"] == 404, f"{tool} of another user's task is not found")

        bad = await c.call_tool("run_mandate", {"mandate": "   "})
        say("invalid_mandate", is_error=bad.is_error, text=bad.content[0].text)
        expect(bad.is_error and bad.structured_content["status"] == 422, "validation is the REST 422's")

        listed = structured(await c.call_tool("list_tasks", {"limit": 10}))
        ids = [t["correlation_id"] for t in listed["tasks"]]
        say("list_tasks", count=len(ids))
        expect(tid in ids and second["correlation_id"] in ids and other_task not in ids, "list_tasks shows your own tasks only")
    say("done")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--other-task", required=True)
    a = ap.parse_args()
    asyncio.run(asyncio.wait_for(session(a.url, a.token, a.other_task), timeout=240))


if __name__ == "__main__":
    main()
