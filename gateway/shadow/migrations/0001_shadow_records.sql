-- Shadow evaluation records (gateway.shadow.store). The whole record is in `record`; the
-- columns next to it are what dashboards and queries filter and group by.
CREATE TABLE IF NOT EXISTS shadow_records (
    id                text PRIMARY KEY,
    at                timestamptz NOT NULL,
    team              text NOT NULL,
    key_name          text,
    virtual_model     text NOT NULL,
    rule              text NOT NULL,
    difficulty        double precision,
    confidence        double precision,
    local_backend     text NOT NULL,
    reference_backend text,
    judge_mode        text NOT NULL,
    local_score       double precision,
    reference_score   double precision,
    outcome           text,
    shadow_cost_usd   double precision NOT NULL,
    record            jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS shadow_records_at ON shadow_records (at);
