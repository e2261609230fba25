"""The store's schema as numbered migrations: entry i brings a store from version i to i+1.
The version reached is kept in ``schema_version``; ``Database.migrate`` applies what is missing."""

# Each entry brings the schema from version i to i+1. Never edit a released entry: add one.
MIGRATIONS: tuple[str, ...] = (
    # 1: calls and their events (the first release created these without a version table)
    """
    CREATE TABLE IF NOT EXISTS calls (
        call_id TEXT PRIMARY KEY,
        worker TEXT NOT NULL,
        remote TEXT NOT NULL DEFAULT '',
        started_at REAL NOT NULL,
        ended_at REAL,
        status INTEGER,
        reason TEXT
    );
    CREATE TABLE IF NOT EXISTS events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        call_id TEXT,
        leg TEXT,
        kind TEXT NOT NULL,
        at REAL NOT NULL,
        data TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS events_call ON events(call_id);
    """,
    # 2: what history search needs on the call row; accounts, sessions, tokens, audit
    """
    ALTER TABLE calls ADD COLUMN seat TEXT NOT NULL DEFAULT '';
    ALTER TABLE calls ADD COLUMN target TEXT;
    ALTER TABLE calls ADD COLUMN category TEXT;
    ALTER TABLE calls ADD COLUMN transfer TEXT;
    ALTER TABLE calls ADD COLUMN text TEXT NOT NULL DEFAULT '';
    CREATE INDEX calls_started ON calls(started_at);
    CREATE TABLE users (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL UNIQUE,
        role TEXT NOT NULL CHECK (role IN ('operator', 'supervisor', 'admin')),
        seat TEXT NOT NULL DEFAULT '',
        pw_hash TEXT NOT NULL,
        created_at REAL NOT NULL,
        disabled INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE sessions (
        token_hash TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        csrf TEXT NOT NULL,
        created_at REAL NOT NULL,
        last_seen REAL NOT NULL
    );
    CREATE TABLE api_tokens (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        token_hash TEXT NOT NULL UNIQUE,
        created_at REAL NOT NULL,
        last_used REAL,
        revoked INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        "user" TEXT NOT NULL,
        action TEXT NOT NULL,
        call_id TEXT,
        outcome TEXT NOT NULL DEFAULT '',
        detail TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX audit_at ON audit(at);
    """,
    # 3: closing the loop: where a call came in (site, number), what was suggested and what the
    # operator finally did; work orders, their status trail, the outbox, SMS, follow-ups, alerts
    """
    ALTER TABLE calls ADD COLUMN number TEXT NOT NULL DEFAULT '';
    ALTER TABLE calls ADD COLUMN called TEXT NOT NULL DEFAULT '';
    ALTER TABLE calls ADD COLUMN site TEXT NOT NULL DEFAULT '';
    ALTER TABLE calls ADD COLUMN day TEXT NOT NULL DEFAULT '';
    ALTER TABLE calls ADD COLUMN suggested TEXT;
    ALTER TABLE calls ADD COLUMN suggested_category TEXT;
    ALTER TABLE calls ADD COLUMN diverted_to TEXT;
    ALTER TABLE calls ADD COLUMN final_action TEXT;
    ALTER TABLE calls ADD COLUMN repeat_of TEXT;
    ALTER TABLE calls ADD COLUMN flowback_of TEXT;
    CREATE INDEX calls_number ON calls(number, started_at);
    CREATE INDEX calls_day ON calls(day);
    CREATE INDEX calls_flowback ON calls(flowback_of) WHERE flowback_of IS NOT NULL;
    CREATE TABLE work_orders (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        order_no TEXT NOT NULL UNIQUE,
        call_id TEXT NOT NULL UNIQUE,
        site TEXT NOT NULL DEFAULT '',
        platform TEXT NOT NULL DEFAULT '',
        target TEXT NOT NULL,
        category TEXT NOT NULL DEFAULT '',
        category_id TEXT NOT NULL DEFAULT '',
        dept TEXT NOT NULL DEFAULT '',
        number TEXT NOT NULL DEFAULT '',
        status TEXT NOT NULL,
        platform_ref TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        deadline REAL,
        delivered_at REAL,
        accepted_at REAL,
        dispatched_at REAL,
        completed_at REAL,
        returned_at REAL,
        day TEXT NOT NULL DEFAULT '',
        body TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX work_orders_day ON work_orders(day);
    CREATE INDEX work_orders_status ON work_orders(status, deadline);
    CREATE TABLE order_status (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        order_no TEXT NOT NULL,
        status TEXT NOT NULL,
        at REAL NOT NULL,
        source TEXT NOT NULL DEFAULT '',
        detail TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX order_status_order ON order_status(order_no);
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL CHECK (kind IN ('order', 'sms')),
        ref TEXT NOT NULL,
        destination TEXT NOT NULL,
        idem_key TEXT NOT NULL UNIQUE,
        status TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at REAL NOT NULL,
        lease_until REAL NOT NULL DEFAULT 0,
        last_error TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        delivered_at REAL,
        answer TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX outbox_due ON outbox(status, next_at);
    CREATE INDEX outbox_kind_status ON outbox(kind, status);
    CREATE TABLE sms (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        call_id TEXT NOT NULL,
        purpose TEXT NOT NULL,
        number TEXT NOT NULL,
        asks TEXT NOT NULL DEFAULT '',
        body TEXT NOT NULL,
        status TEXT NOT NULL,
        reason TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        sent_at REAL,
        UNIQUE (call_id, purpose)
    );
    CREATE INDEX sms_number ON sms(number, created_at);
    CREATE TABLE followups (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        call_id TEXT NOT NULL,
        side TEXT NOT NULL CHECK (side IN ('110', 'hotline')),
        score INTEGER NOT NULL CHECK (score BETWEEN 1 AND 3),
        source TEXT NOT NULL,
        by_user TEXT NOT NULL DEFAULT '',
        at REAL NOT NULL,
        note TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX followups_call ON followups(call_id);
    CREATE TABLE alerts (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        kind TEXT NOT NULL,
        ref TEXT NOT NULL,
        call_id TEXT,
        order_no TEXT,
        message TEXT NOT NULL,
        acked_by TEXT,
        acked_at REAL,
        UNIQUE (kind, ref)
    );
    CREATE TABLE webhook_seen (
        id TEXT PRIMARY KEY,
        at REAL NOT NULL
    );
    """,
    # 4: fenliu's own call id (a UUID from now on) beside the caller's SIP Call-ID, which a PBX may
    # reuse; the calls recorded before kept their SIP Call-ID as id, and it is their sip_call_id too
    """
    ALTER TABLE calls ADD COLUMN sip_call_id TEXT NOT NULL DEFAULT '';
    UPDATE calls SET sip_call_id = call_id WHERE call_id NOT LIKE 'rejected-%';
    CREATE INDEX calls_sip_call_id ON calls(sip_call_id);
    """,
    # 5: centre-wide switches a duty supervisor sets for every instance (stop diversion suggestions,
    # stop the IVR's offers), with who set them and when
    """
    CREATE TABLE controls (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        by_user TEXT NOT NULL DEFAULT '',
        at REAL NOT NULL
    );
    """,
    # 6: which instance handled a call and opened its order (several instances share one store)
    """
    ALTER TABLE calls ADD COLUMN instance TEXT NOT NULL DEFAULT '';
    ALTER TABLE work_orders ADD COLUMN instance TEXT NOT NULL DEFAULT '';
    """,
    # 7: the centre view (fenliu.console.centre): every instance's console events in one numbered
    # stream, the instances' heartbeats (by the store's clock), and the keys an operator presses on
    # one instance for a call another instance holds, with their outcome
    """
    CREATE TABLE centre_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        instance TEXT NOT NULL,
        at REAL NOT NULL,
        body TEXT NOT NULL
    );
    CREATE INDEX centre_events_at ON centre_events(at);
    CREATE TABLE instances (
        name TEXT PRIMARY KEY,
        started REAL NOT NULL,
        seen REAL NOT NULL,
        console TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE centre_commands (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        instance TEXT NOT NULL,
        call_id TEXT NOT NULL,
        action TEXT NOT NULL,
        args TEXT NOT NULL,
        by_user TEXT NOT NULL,
        via TEXT NOT NULL,
        at REAL NOT NULL,
        expires REAL NOT NULL,
        state TEXT NOT NULL DEFAULT 'queued',
        status INTEGER NOT NULL DEFAULT 0,
        answer TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX centre_commands_open ON centre_commands(instance, state);
    CREATE TABLE centre_epoch (
        epoch TEXT NOT NULL
    );
    """,
    # 8: nothing lost with an instance — each leg's SIP dialog (so that another instance, or this one
    # restarted, can send it a BYE), the callback list (every call fenliu ended or lost, until a person
    # has called the caller back), and who declared an instance dead
    """
    CREATE TABLE leg_dialogs (
        call_id TEXT NOT NULL,
        leg TEXT NOT NULL,
        instance TEXT NOT NULL,
        worker TEXT NOT NULL,
        sip_call_id TEXT NOT NULL,
        local_party TEXT NOT NULL,
        remote_party TEXT NOT NULL,
        target TEXT NOT NULL,
        routes TEXT NOT NULL,
        at REAL NOT NULL,
        PRIMARY KEY (call_id, leg)
    );
    CREATE INDEX leg_dialogs_instance ON leg_dialogs(instance);
    CREATE TABLE callbacks (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        call_id TEXT NOT NULL UNIQUE,
        number TEXT NOT NULL,
        at REAL NOT NULL,
        reason TEXT NOT NULL,
        heard TEXT NOT NULL DEFAULT '',
        instance TEXT NOT NULL DEFAULT '',
        done_by TEXT,
        done_at REAL,
        note TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX callbacks_open ON callbacks(done_at);
    ALTER TABLE instances ADD COLUMN dead_at REAL;
    ALTER TABLE instances ADD COLUMN dead_by TEXT NOT NULL DEFAULT '';
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)
