-- The spend ledger: one row per finished request, partitioned by month on ts.
-- Narrow, typed columns and no per-row JSON: a year of traffic stays small and fast to scan.
CREATE TABLE gateway_ledger (
    ts                timestamptz      NOT NULL,
    request_id        uuid             NOT NULL,
    team              text             NOT NULL,
    key_name          text,
    virtual_model     text             NOT NULL,
    protocol          text             NOT NULL,
    rule              text             NOT NULL,
    backend           text             NOT NULL,
    model             text             NOT NULL,
    self_hosted       boolean          NOT NULL,
    status            smallint         NOT NULL,
    stream            boolean          NOT NULL,
    prompt_tokens     integer          NOT NULL,
    completion_tokens integer          NOT NULL,
    cached_tokens     integer          NOT NULL,
    cost_usd          double precision NOT NULL,
    savings_usd       double precision NOT NULL,
    latency_ms        real             NOT NULL,
    overhead_ms       real             NOT NULL,
    cache             text             NOT NULL,
    difficulty        real,
    -- a replayed row is the same row: (request_id, ts) keys it, so a replay never double-counts
    PRIMARY KEY (request_id, ts)
) PARTITION BY RANGE (ts);

-- What the reports filter and group on (created on every partition).
CREATE INDEX gateway_ledger_ts ON gateway_ledger (ts);
CREATE INDEX gateway_ledger_team_ts ON gateway_ledger (team, ts);
CREATE INDEX gateway_ledger_key_ts ON gateway_ledger (key_name, ts);
