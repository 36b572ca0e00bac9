"""A streamable-HTTP MCP server for Euglena's tests, on the official Python SDK (`mcp`).

Every call is appended to the log file (one JSON line, written when the call starts, so a
call in flight when its caller dies is still seen) with the tool, the arguments, the
idempotency key from `_meta` and whether the expected Authorization header came. Header
values are never logged.

    python mcp_server.py --port 8931 --log calls.jsonl [--token secret]
"""

import argparse
import asyncio
import json

from mcp.server.mcpserver import Context, MCPServer

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--log", required=True)
parser.add_argument("--token", default="")
args = parser.parse_args()

server = MCPServer("euglena-test-tools")


def record(ctx: Context, tool: str, arguments: dict) -> None:
    rc = ctx.request_context
    meta = dict(rc.meta or {}) if rc.meta is not None else {}
    headers = getattr(rc.request, "headers", None) or {}
    authorized = headers.get("authorization") == f"Bearer {args.token}" if args.token else None
    line = {
        "tool": tool,
        "arguments": arguments,
        "key": meta.get("io.euglena/idempotency_key"),
        "authorized": authorized,
    }
    with open(args.log, "a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")


@server.tool()
async def echo(text: str, ctx: Context) -> str:
    """Returns the text it was given."""
    record(ctx, "echo", {"text": text})
    return f"echo: {text}"


@server.tool()
async def add(a: int, b: int, ctx: Context) -> str:
    """Adds two integers."""
    record(ctx, "add", {"a": a, "b": b})
    return f"{a} + {b} = {a + b}"


@server.tool()
async def slow(seconds: float, label: str, ctx: Context) -> str:
    """Waits `seconds`, then answers with the label."""
    record(ctx, "slow", {"seconds": seconds, "label": label})
    await asyncio.sleep(seconds)
    return f"slow {label} done"


@server.tool()
async def delete_record(name: str, ctx: Context) -> str:
    """Deletes a record by name (the sensitive tool approvals guard)."""
    record(ctx, "delete_record", {"name": name})
    return f"deleted {name}"


server.run("streamable-http", host="127.0.0.1", port=args.port)
