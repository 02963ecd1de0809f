"""The schema: migrations applied in order by :meth:`Store.migrate`."""

from __future__ import annotations

# Each entry migrates the schema from version i to i + 1. Append, never edit.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE environments (
        name TEXT PRIMARY KEY,
        server_url TEXT NOT NULL DEFAULT '',
        bot_token TEXT NOT NULL DEFAULT '',
        bot_user_id TEXT NOT NULL DEFAULT '',
        bot_username TEXT NOT NULL DEFAULT '',
        bot_is_bot INTEGER NOT NULL DEFAULT 0,
        server_version TEXT NOT NULL DEFAULT '',
        verified_at REAL,
        webhook_token TEXT NOT NULL DEFAULT '',
        mirror_channel_id TEXT NOT NULL DEFAULT '',
        mirror_channel_name TEXT NOT NULL DEFAULT '',
        notify_map TEXT NOT NULL DEFAULT '{}',
        callback_url TEXT NOT NULL DEFAULT '',
        callback_secret TEXT NOT NULL DEFAULT '',
        api_key_hash TEXT NOT NULL DEFAULT '',
        active INTEGER NOT NULL DEFAULT 0,
        updated_at REAL
    );
    INSERT INTO environments (name) VALUES ('test'), ('production');
    CREATE TABLE conversations (
        id TEXT PRIMARY KEY,
        env TEXT NOT NULL REFERENCES environments(name),
        visitor_name TEXT NOT NULL,
        visitor_email TEXT NOT NULL DEFAULT '',
        external_id TEXT NOT NULL DEFAULT '',
        status TEXT NOT NULL DEFAULT 'open',
        root_post_id TEXT NOT NULL DEFAULT '',
        channel_id TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        closed_at REAL
    );
    CREATE INDEX conversations_env_created ON conversations(env, created_at);
    CREATE UNIQUE INDEX conversations_root_post ON conversations(env, root_post_id)
        WHERE root_post_id != '';
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        env TEXT NOT NULL REFERENCES environments(name),
        conversation_id TEXT REFERENCES conversations(id),
        direction TEXT NOT NULL,
        notification_type TEXT NOT NULL DEFAULT '',
        author TEXT NOT NULL DEFAULT '',
        text TEXT NOT NULL,
        status TEXT NOT NULL,
        reason TEXT NOT NULL DEFAULT '',
        channel_id TEXT NOT NULL DEFAULT '',
        post_id TEXT NOT NULL DEFAULT '',
        chunk_post_ids TEXT NOT NULL DEFAULT '[]',
        pending_key TEXT NOT NULL,
        error TEXT NOT NULL DEFAULT '',
        attempts INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX messages_conversation ON messages(conversation_id, id);
    CREATE INDEX messages_status ON messages(status, env, id);
    CREATE TABLE log (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        ts REAL NOT NULL,
        env TEXT NOT NULL DEFAULT '',
        direction TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL DEFAULT '',
        outcome TEXT NOT NULL,
        http_status INTEGER,
        duration_ms REAL,
        error TEXT NOT NULL DEFAULT '',
        conversation_id TEXT NOT NULL DEFAULT '',
        message_id INTEGER,
        post_id TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX log_env ON log(env, id);
    CREATE INDEX log_direction ON log(direction, id);
    CREATE INDEX log_outcome ON log(outcome, id);
    CREATE INDEX log_env_direction_outcome ON log(env, direction, outcome, id);
    CREATE INDEX log_ts ON log(ts);
    """,
    # 2: inbound replies, their delivery to the host, user names, chat rate limit.
    """
    ALTER TABLE messages ADD COLUMN delivery_status TEXT NOT NULL DEFAULT '';
    ALTER TABLE messages ADD COLUMN delivery_attempts INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE messages ADD COLUMN next_delivery_at REAL;
    CREATE UNIQUE INDEX messages_inbound_post ON messages(env, post_id)
        WHERE direction IN ('agent', 'note', 'event');
    CREATE INDEX messages_delivery ON messages(delivery_status, next_delivery_at);
    CREATE TABLE mm_users (
        env TEXT NOT NULL,
        user_id TEXT NOT NULL,
        display_name TEXT NOT NULL,
        is_bot INTEGER NOT NULL DEFAULT 0,
        fetched_at REAL NOT NULL,
        PRIMARY KEY (env, user_id)
    );
    ALTER TABLE environments ADD COLUMN accept_other_bots INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE rate_limits (
        bucket TEXT PRIMARY KEY,
        window_start REAL NOT NULL,
        hits INTEGER NOT NULL
    );
    """,
    # 3: the readiness checklist: admins' ticks and the results of live checks.
    """
    CREATE TABLE checklist_ticks (
        env TEXT NOT NULL,
        item TEXT NOT NULL,
        ticked INTEGER NOT NULL,
        ticked_by TEXT NOT NULL,
        ticked_at REAL NOT NULL,
        PRIMARY KEY (env, item)
    );
    CREATE TABLE checks (
        env TEXT NOT NULL,
        item TEXT NOT NULL,
        state TEXT NOT NULL,
        detail TEXT NOT NULL,
        subject TEXT NOT NULL DEFAULT '',
        checked_at REAL NOT NULL,
        PRIMARY KEY (env, item)
    );
    """,
    # 4: the log page's "this conversation" filter.
    """
    CREATE INDEX log_conversation ON log(conversation_id, id);
    """,
    # 5: agent replies whose post lookup failed, kept for `flask retry`.
    """
    CREATE TABLE inbound_queue (
        env TEXT NOT NULL,
        post_id TEXT NOT NULL,
        payload TEXT NOT NULL,
        error TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 1,
        created_at REAL NOT NULL,
        next_at REAL NOT NULL,
        PRIMARY KEY (env, post_id)
    );
    """,
    # 6: names of the channels in use, so errors name them rather than show ids.
    """
    ALTER TABLE environments ADD COLUMN channel_names TEXT NOT NULL DEFAULT '{}';
    """,
    # 7: where a conversation began; the chat page shows only its own.
    """
    ALTER TABLE conversations ADD COLUMN source TEXT NOT NULL DEFAULT 'api';
    """,
    # 8: the server's MaxPostSize, learned when the token is verified.
    """
    ALTER TABLE environments ADD COLUMN max_post_size INTEGER NOT NULL DEFAULT 16383;
    """,
    # 9 (the worker): when the worker tries a failed message next (growing delays).
    """
    ALTER TABLE messages ADD COLUMN next_attempt_at REAL;
    """,
    # 10 (inbound inbox, issue 8): every accepted webhook call is kept in `inbox`
    # before it is routed (the rows of inbound_queue move in), and repeated
    # rejections are counted in one log row per window instead of a row each.
    """
    CREATE TABLE inbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        env TEXT NOT NULL,
        post_id TEXT NOT NULL,
        payload TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        claim TEXT NOT NULL DEFAULT '',
        error TEXT NOT NULL DEFAULT '',
        outcome TEXT NOT NULL DEFAULT '',
        received_at REAL NOT NULL,
        next_at REAL NOT NULL,
        routed_at REAL
    );
    CREATE UNIQUE INDEX inbox_post ON inbox(env, post_id);
    CREATE INDEX inbox_due ON inbox(next_at) WHERE state != 'done';
    INSERT INTO inbox (env, post_id, payload, state, attempts, error, received_at, next_at)
        SELECT env, post_id, payload, 'pending', attempts, error, created_at, next_at
        FROM inbound_queue ORDER BY created_at;
    DROP TABLE inbound_queue;
    ALTER TABLE log ADD COLUMN count INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE log ADD COLUMN last_ts REAL;
    ALTER TABLE log ADD COLUMN count_key TEXT;
    CREATE UNIQUE INDEX log_count_key ON log(count_key) WHERE count_key IS NOT NULL;
    """,
    # 11: other systems' webhooks (sources) and rich notifications (issue 11, parts 3-4):
    # each source with its secret and template; payloads whose template failed, kept
    # for a re-send; a notification's attachments; a colour and title per type.
    """
    CREATE TABLE sources (
        env TEXT NOT NULL REFERENCES environments(name),
        name TEXT NOT NULL,
        notification_type TEXT NOT NULL,
        template TEXT NOT NULL DEFAULT '',
        secret TEXT NOT NULL,
        hmac_header TEXT NOT NULL DEFAULT '',
        received INTEGER NOT NULL DEFAULT 0,
        last_payload TEXT,
        last_received_at REAL,
        rejected INTEGER NOT NULL DEFAULT 0,
        last_rejected_at REAL,
        last_rejection TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (env, name)
    );
    CREATE TABLE source_payloads (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        env TEXT NOT NULL,
        source TEXT NOT NULL,
        payload TEXT NOT NULL,
        error TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'kept',
        message_id INTEGER,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX source_payloads_waiting ON source_payloads(env, source, status, id);
    ALTER TABLE messages ADD COLUMN attachments TEXT NOT NULL DEFAULT '';
    ALTER TABLE environments ADD COLUMN notify_styles TEXT NOT NULL DEFAULT '{}';
    """,
    # 12 (account login, issue 11 part 1): an environment signs in either with a
    # bot token ('token') or as an ordinary account ('login': login id + password,
    # the password kept like the bot token: stored, masked, never shown back).
    """
    ALTER TABLE environments ADD COLUMN auth_mode TEXT NOT NULL DEFAULT 'token';
    ALTER TABLE environments ADD COLUMN login_id TEXT NOT NULL DEFAULT '';
    ALTER TABLE environments ADD COLUMN password TEXT NOT NULL DEFAULT '';
    """,
    # 13 (agents work from Mattermost, issue 10 parts 1-2): who claimed a conversation
    # with the Claim button, and the /bridge slash command's token.
    """
    ALTER TABLE conversations ADD COLUMN assignee TEXT NOT NULL DEFAULT '';
    ALTER TABLE environments ADD COLUMN command_token TEXT NOT NULL DEFAULT '';
    """,
    # 14 (admin sign-in with Mattermost, issue 11 part 2): the log of admin actions,
    # under the name each admin acts as (a Mattermost username, or the name typed
    # at the password login): sign-ins, refusals, logouts and every admin POST.
    """
    CREATE TABLE admin_log (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        ts REAL NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT ''
    );
    """,
    # 15 (files both ways, issue 10 part 4): a message's files. A visitor's keeps
    # its bytes until the post carries it (a failed upload is retried); an
    # agent's is its Mattermost file id, served from Mattermost.
    """
    CREATE TABLE message_files (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        message_id INTEGER NOT NULL REFERENCES messages(id),
        conversation_id TEXT NOT NULL,
        env TEXT NOT NULL,
        file_id TEXT NOT NULL DEFAULT '',
        name TEXT NOT NULL,
        size INTEGER NOT NULL,
        mime_type TEXT NOT NULL,
        content BLOB,
        created_at REAL NOT NULL
    );
    CREATE INDEX message_files_message ON message_files(message_id);
    CREATE INDEX message_files_conversation ON message_files(conversation_id, file_id);
    """,
]


def split_sql(script: str) -> list[str]:
    """Statements of a migration script; the scripts hold no ';' inside literals."""
    return [part.strip() for part in script.split(";") if part.strip()]
