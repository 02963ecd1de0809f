"""``python -m bench.standin_server``: the tests' Mattermost stand-in as a child process.

Driven by :class:`bench.common.StandinProcess` with JSON lines: it prints the
world's ids once, then answers ``["posts", [...]]``, ``["set", {"post_delay":
seconds}]``, ``["stats", null]`` and ``["stop", null]`` read from stdin. It
exits when stdin closes.
"""

from __future__ import annotations

import json
import os
import sys

from tests.standin import MattermostStandin


def main() -> None:
    mm = MattermostStandin().start()
    out = sys.stdout

    def send(value) -> None:
        out.write(json.dumps(value) + "\n")
        out.flush()

    try:
        send(
            {
                "url": mm.url,
                "pid": os.getpid(),
                "bot_token": mm.bot["token"],
                "bot_id": mm.bot["id"],
                "agent_id": mm.agent["id"],
                "agent_username": mm.agent["username"],
                "team_id": mm.team["id"],
                "team_name": mm.team["name"],
                "support_id": mm.channels["support"]["id"],
                "support_name": mm.channels["support"]["name"],
                "sales_id": mm.channels["sales"]["id"],
            }
        )
        users = {"agent": mm.agent, "bot": mm.bot}
        for line in sys.stdin:
            command, args = json.loads(line)
            if command == "stop":
                break
            try:
                if command == "posts":
                    created = []
                    for spec in args:
                        post = mm.user_post(
                            users[spec.get("user", "agent")],
                            mm.channels[spec.get("channel", "support")]["id"],
                            spec["message"],
                            root_id=spec.get("root_id", ""),
                        )
                        created.append(
                            {
                                key: post[key]
                                for key in ("id", "create_at", "message", "root_id", "channel_id")
                            }
                        )
                    send(created)
                elif command == "set":
                    mm.post_delay = float(args["post_delay"])
                    send({"post_delay": mm.post_delay})
                elif command == "stats":
                    with mm._lock:
                        send(
                            {
                                "posts": len(mm.posts),
                                "requests": len(mm.requests_seen),
                                "internal_errors": len(mm.internal_errors),
                                "webhook_deliveries": len(mm.webhook_deliveries),
                                "posts_in_flight": mm.posts_in_flight,
                            }
                        )
                else:
                    send({"error": f"unknown command {command!r}"})
            except Exception as exc:  # noqa: BLE001 - reported to the parent
                send({"error": f"{type(exc).__name__}: {exc}"})
    finally:
        mm.close()


if __name__ == "__main__":
    main()
