"""The centre's schema, as numbered migrations applied in order (each in one transaction, recorded in
``fleet_migrations``). Kiosks connect with their own login roles, members of ``edge_verify_kiosk``;
row-level security lets a kiosk read only its group's revisions and its own sealed boxes, and write
only its own audit rows and enrolment requests. Audit rows are append-only."""

from __future__ import annotations

KIOSK_GROUP_ROLE = "edge_verify_kiosk"
CHANNEL = "edge_verify_templates"  # NOTIFY payload: the group whose templates changed
REQUESTS_CHANNEL = "edge_verify_requests"  # NOTIFY: a kiosk asked for an enrolment

MIGRATIONS: dict[int, str] = {
    1: f"""
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{KIOSK_GROUP_ROLE}') THEN
        CREATE ROLE {KIOSK_GROUP_ROLE} NOLOGIN;
    END IF;
END $$;

CREATE TABLE fleet_meta (key text PRIMARY KEY, value text NOT NULL);

CREATE TABLE kiosks (
    name text PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9_-]{{0,39}}$'),
    role name UNIQUE NOT NULL,
    group_name text NOT NULL,
    public_key bytea NOT NULL CHECK (length(public_key) = 32),
    may_enrol boolean NOT NULL DEFAULT false,
    added_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz,
    applied_revision bigint NOT NULL DEFAULT 0,
    store_revision bigint NOT NULL DEFAULT 0,
    audit_head_id bigint NOT NULL DEFAULT 0,
    audit_head_mac text NOT NULL DEFAULT '',
    seen_at timestamptz,
    problem text,
    rollback text
);

CREATE TABLE template_revisions (
    revision bigint PRIMARY KEY,
    group_name text NOT NULL,
    identity text NOT NULL,
    fingerprint text NOT NULL,
    op text NOT NULL CHECK (op IN ('put', 'remove')),
    frames integer NOT NULL,
    digest text NOT NULL,
    signature bytea,
    authority_box bytea,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE SEQUENCE template_revision_seq OWNED BY template_revisions.revision;
CREATE INDEX template_revisions_latest ON template_revisions (group_name, identity, revision DESC);

CREATE TABLE template_boxes (
    revision bigint NOT NULL REFERENCES template_revisions ON DELETE CASCADE,
    kiosk text NOT NULL REFERENCES kiosks ON DELETE CASCADE,
    box bytea NOT NULL,
    PRIMARY KEY (kiosk, revision)
);

CREATE TABLE site_calibrations (
    group_name text NOT NULL,
    fingerprint text NOT NULL,
    revision bigint NOT NULL,
    payload text NOT NULL,
    signature bytea,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_name, fingerprint)
);

CREATE TABLE enrol_requests (
    id bigserial PRIMARY KEY,
    kiosk text NOT NULL,
    identity text NOT NULL,
    fingerprint text NOT NULL,
    frames integer NOT NULL,
    box bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'refused')),
    revision bigint,
    detail text
);

CREATE TABLE audit_rows (
    kiosk text NOT NULL,
    tbl text NOT NULL CHECK (tbl IN ('audit', 'audit_actions')),
    row_id bigint NOT NULL,
    ts double precision NOT NULL,
    row jsonb NOT NULL,
    mac text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kiosk, tbl, row_id)
);

CREATE FUNCTION fleet_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit rows are append-only';
END $$;
CREATE TRIGGER audit_rows_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_rows
    FOR EACH STATEMENT EXECUTE FUNCTION fleet_append_only();

-- The kiosk whose role this session logged in as (NULL: not a kiosk, or revoked).
CREATE FUNCTION fleet_kiosk() RETURNS text LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
    SELECT name FROM kiosks WHERE role = session_user AND revoked_at IS NULL
$$;
CREATE FUNCTION fleet_group() RETURNS text LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
    SELECT group_name FROM kiosks WHERE role = session_user AND revoked_at IS NULL
$$;
CREATE FUNCTION fleet_may_enrol() RETURNS boolean LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS $$
    SELECT coalesce((SELECT may_enrol FROM kiosks WHERE role = session_user AND revoked_at IS NULL), false)
$$;

-- A kiosk reports what it applied and its store's chain head; a head older than one it reported
-- before (a store replaced by an older copy) is flagged, and the kiosk cannot clear the flag.
CREATE FUNCTION fleet_report(p_applied bigint, p_store_revision bigint, p_head_id bigint, p_head_mac text,
                             p_problem text) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    k kiosks;
    pushed text;
    flag text;
BEGIN
    SELECT * INTO k FROM kiosks WHERE role = session_user AND revoked_at IS NULL FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'not an enrolled kiosk (revoked?)';
    END IF;
    SELECT mac INTO pushed FROM audit_rows WHERE kiosk = k.name AND tbl = 'audit' AND row_id = p_head_id;
    IF p_store_revision < k.store_revision OR p_head_id < k.audit_head_id THEN
        flag := format('store set back: revision %s and audit row %s reported after revision %s and audit row %s',
                       p_store_revision, p_head_id, k.store_revision, k.audit_head_id);
    ELSIF p_head_id = k.audit_head_id AND p_head_mac <> k.audit_head_mac AND k.audit_head_mac <> '' THEN
        flag := format('store replaced: audit row %s differs from the one reported before', p_head_id);
    ELSIF pushed IS NOT NULL AND pushed <> p_head_mac THEN
        flag := format('store replaced: audit row %s differs from the one pushed before', p_head_id);
    ELSIF EXISTS (SELECT 1 FROM audit_rows WHERE kiosk = k.name AND tbl = 'audit' AND row_id > p_head_id) THEN
        flag := format('store set back: audit rows after %s were pushed before', p_head_id);
    END IF;
    UPDATE kiosks SET
        applied_revision = p_applied,
        store_revision = greatest(store_revision, p_store_revision),
        audit_head_id = greatest(audit_head_id, p_head_id),
        audit_head_mac = CASE WHEN p_head_id >= audit_head_id THEN p_head_mac ELSE audit_head_mac END,
        seen_at = now(),
        problem = p_problem,
        rollback = coalesce(rollback, flag)
    WHERE name = k.name;
    RETURN coalesce(k.rollback, flag);
END $$;

REVOKE ALL ON ALL TABLES IN SCHEMA public FROM PUBLIC;
REVOKE ALL ON FUNCTION fleet_report(bigint, bigint, bigint, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fleet_report(bigint, bigint, bigint, text, text) TO {KIOSK_GROUP_ROLE};
GRANT EXECUTE ON FUNCTION fleet_kiosk(), fleet_group(), fleet_may_enrol() TO {KIOSK_GROUP_ROLE};
GRANT SELECT ON fleet_meta, template_revisions, template_boxes, site_calibrations TO {KIOSK_GROUP_ROLE};
GRANT SELECT, INSERT ON audit_rows TO {KIOSK_GROUP_ROLE};
GRANT INSERT ON enrol_requests TO {KIOSK_GROUP_ROLE};
GRANT USAGE ON SEQUENCE enrol_requests_id_seq TO {KIOSK_GROUP_ROLE};

ALTER TABLE template_revisions ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_group ON template_revisions FOR SELECT TO {KIOSK_GROUP_ROLE} USING (group_name = fleet_group());
ALTER TABLE template_boxes ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_boxes ON template_boxes FOR SELECT TO {KIOSK_GROUP_ROLE} USING (kiosk = fleet_kiosk());
ALTER TABLE site_calibrations ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_group ON site_calibrations FOR SELECT TO {KIOSK_GROUP_ROLE} USING (group_name = fleet_group());
ALTER TABLE audit_rows ENABLE ROW LEVEL SECURITY;
CREATE POLICY read_own ON audit_rows FOR SELECT TO {KIOSK_GROUP_ROLE} USING (kiosk = fleet_kiosk());
CREATE POLICY write_own ON audit_rows FOR INSERT TO {KIOSK_GROUP_ROLE} WITH CHECK (kiosk = fleet_kiosk());
ALTER TABLE enrol_requests ENABLE ROW LEVEL SECURITY;
CREATE POLICY request_own ON enrol_requests FOR INSERT TO {KIOSK_GROUP_ROLE}
    WITH CHECK (kiosk = fleet_kiosk() AND fleet_may_enrol() AND state = 'pending');
""",
    # A SECURITY DEFINER function searches pg_temp first unless pg_temp is named: a kiosk's temporary
    # table "kiosks" made fleet_kiosk() name another kiosk (its rows, boxes, audit, enrolment rights).
    2: f"""
ALTER FUNCTION fleet_kiosk() SET search_path = public, pg_temp;
ALTER FUNCTION fleet_group() SET search_path = public, pg_temp;
ALTER FUNCTION fleet_may_enrol() SET search_path = public, pg_temp;
ALTER FUNCTION fleet_report(bigint, bigint, bigint, text, text) SET search_path = public, pg_temp;
REVOKE ALL ON FUNCTION fleet_kiosk(), fleet_group(), fleet_may_enrol() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fleet_kiosk(), fleet_group(), fleet_may_enrol() TO {KIOSK_GROUP_ROLE};
""",
}
LATEST = max(MIGRATIONS)


def migrate(conn) -> list[int]:
    """Apply the migrations the centre lacks (``conn``: a psycopg connection of the fleet's owner);
    returns those applied."""
    with conn.transaction():
        conn.execute(
            "CREATE TABLE IF NOT EXISTS fleet_migrations (version integer PRIMARY KEY, applied_at timestamptz)"
        )
        conn.execute("LOCK TABLE fleet_migrations IN EXCLUSIVE MODE")
        done = {r[0] for r in conn.execute("SELECT version FROM fleet_migrations").fetchall()}
    applied = []
    for version in sorted(MIGRATIONS):
        if version in done:
            continue
        with conn.transaction():
            conn.execute(MIGRATIONS[version])
            conn.execute("INSERT INTO fleet_migrations VALUES (%s, now())", (version,))
        applied.append(version)
    return applied
