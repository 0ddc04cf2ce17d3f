//! `storage.sqlite` on PostgreSQL end to end: the real `pulp` binary loads the
//! real pulp-ext-postgres library, pinned with `[providers]`; the
//! `shared-notes` cell, unchanged, drives it over HTTP; a real PostgreSQL
//! server (initdb + pg_ctl on a temp dir) holds the rows, which the test reads
//! with `psql`. Without the PostgreSQL programs these tests print `SKIPPED`
//! and pass.

use pulp_e2e::postgres::{BUILT_IN, POSTGRES, PgServer, install_extensions, shared_notes};
use pulp_e2e::{Pulp, Scratch, artifacts, count, http_client, run, start_http};

/// One host running one copy of `shared-notes`, reached over HTTP.
struct Host {
    pulp: Pulp,
    http: reqwest::blocking::Client,
    base: String,
    // Dropped after `pulp`: it holds the libraries and the manifests.
    _scratch: Scratch,
}

/// A status and the body as text.
type Answer = (u16, String);

impl Host {
    fn start(pg: &PgServer, cell: &str, provider: &str, limits: &str) -> Host {
        let scratch = Scratch::new();
        install_extensions(&scratch, &artifacts().lib_dir, &pg.extension_config(), "");
        let manifest = shared_notes(&scratch, cell, provider, limits, cell);
        let (pulp, port) = start_http(&scratch, &[manifest], &[]);
        Host {
            pulp,
            http: http_client(),
            base: format!("http://127.0.0.1:{port}"),
            _scratch: scratch,
        }
    }

    fn send(&self, method: &str, path: &str, body: &str) -> Answer {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let response = self
            .http
            .request(method, format!("{}{path}", self.base))
            .body(body.to_owned())
            .send()
            .unwrap();
        let status = response.status().as_u16();
        (status, response.text().unwrap())
    }

    fn query(&self, sql: &str) -> Answer {
        self.send("POST", "/query", sql)
    }
}

fn ok(body: &str) -> Answer {
    (200, body.to_owned())
}

fn code(status: u16, n: i32) -> Answer {
    (status, format!("code {n}"))
}

#[test]
fn the_notes_cell_runs_unchanged_on_postgres() {
    let Some(pg) = PgServer::start() else { return };
    let host = Host::start(&pg, "notes", POSTGRES, "");
    host.pulp.wait_for(&[
        "storage.sqlite for cell notes on PostgreSQL",
        "schema notes",
    ]);
    assert_eq!(host.send("PUT", "/notes/milk", "buy milk").0, 201);
    assert_eq!(host.send("PUT", "/notes/home", "call home").0, 201);
    assert_eq!(host.send("PUT", "/notes/milk", "buy oat milk").0, 201);
    assert_eq!(host.send("GET", "/notes/milk", ""), ok("buy oat milk"));
    assert_eq!(host.send("GET", "/notes", ""), ok("home\nmilk"));
    assert_eq!(host.send("GET", "/notes/none", ""), code(404, 6));
    // The rows are in the cell's own schema, owned by the cell's role.
    assert_eq!(
        pg.psql("SELECT key || '=' || body FROM notes.notes ORDER BY key"),
        "home=call home\nmilk=buy oat milk"
    );
    assert_eq!(
        pg.psql(
            "SELECT tableowner FROM pg_tables WHERE schemaname = 'notes' AND tablename = 'notes'"
        ),
        "pulp_notes"
    );
    // A transaction spread over several calls: all lines or none.
    assert_eq!(host.send("POST", "/batch", "a=1\nb=2").0, 201);
    assert_eq!(
        host.send("POST", "/batch", "c=3\nno equals sign"),
        code(400, 3)
    );
    assert_eq!(host.send("GET", "/notes", ""), ok("a\nb\nhome\nmilk"));
    // Every SQL type round-trips with `?` placeholders.
    assert_eq!(host.send("GET", "/types", ""), ok("ok"));
    drop(host);

    // The same cell, unchanged, on the built-in provider gives the same answers.
    let sqlite = Host::start(&pg, "notes", BUILT_IN, "");
    assert_eq!(sqlite.send("PUT", "/notes/milk", "buy milk").0, 201);
    assert_eq!(sqlite.send("GET", "/notes/milk", ""), ok("buy milk"));
    assert_eq!(sqlite.send("GET", "/types", ""), ok("ok"));
    assert_eq!(sqlite.send("POST", "/batch", "c=3\nx"), code(400, 3));
}

#[test]
fn a_cell_reaches_its_own_schema_only() {
    let Some(pg) = PgServer::start() else { return };
    let beta = Host::start(&pg, "beta", POSTGRES, "");
    assert_eq!(beta.send("PUT", "/notes/secret", "beta's secret").0, 201);
    let alpha = Host::start(&pg, "alpha", POSTGRES, "");
    assert_eq!(alpha.send("PUT", "/notes/mine", "alpha's").0, 201);

    let refused = [
        "SELECT * FROM beta.notes",
        "SET ROLE pulp_beta",
        "SET ROLE postgres",
        "SET SESSION AUTHORIZATION postgres",
        "ALTER ROLE pulp_alpha SUPERUSER",
        "CREATE ROLE intruder",
        "SELECT pg_read_file('/etc/hostname')",
        "COPY (SELECT 1) TO PROGRAM 'touch /tmp/pulp-pg-escape'",
        "COPY notes TO '/tmp/pulp-pg-escape'",
        "GRANT pulp_beta TO pulp_alpha",
        "CREATE TABLE beta.planted (x int)",
    ];
    for sql in refused {
        assert_eq!(alpha.query(sql), code(403, 4), "{sql}");
    }
    // Scripts and session commands: there is no higher role to go back to.
    for script in [
        "RESET ROLE; SELECT * FROM beta.notes",
        "SET ROLE NONE; SELECT * FROM beta.notes",
        "RESET SESSION AUTHORIZATION; SELECT * FROM beta.notes",
        "SET search_path TO beta; SELECT * FROM notes",
        "DO $$ BEGIN EXECUTE 'SELECT * FROM beta.notes'; END $$",
    ] {
        let (status, body) = alpha.send("POST", "/exec", script);
        assert!(
            [(403, "code 4"), (500, "code 5")].contains(&(status, body.as_str())),
            "{script}: {status} {body}"
        );
    }
    // What alpha's session looked at afterwards is still its own table.
    alpha.send("POST", "/exec", "RESET search_path");
    assert_eq!(alpha.send("GET", "/notes", ""), ok("mine"));
    assert_eq!(beta.send("GET", "/notes/secret", ""), ok("beta's secret"));
    assert!(!std::path::Path::new("/tmp/pulp-pg-escape").exists());
    let line = alpha
        .pulp
        .wait_for(&["permission denied for schema beta", "cell=alpha "]);
    assert!(line.contains("WARN"), "{line}");
    // The roles have no attributes and no memberships.
    assert_eq!(
        pg.psql(
            "SELECT string_agg(rolname || ':' || rolsuper || rolcreaterole || rolcreatedb || rolbypassrls, ',' ORDER BY rolname) \
             FROM pg_roles WHERE rolname LIKE 'pulp\\_%'"
        ),
        "pulp_alpha:falsefalsefalsefalse,pulp_beta:falsefalsefalsefalse"
    );
    assert_eq!(
        pg.psql(
            "SELECT count(*) FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member WHERE r.rolname LIKE 'pulp\\_%'"
        ),
        "0"
    );
}

#[test]
fn transactions_span_calls_and_a_crash_rolls_back_its_transaction() {
    let Some(pg) = PgServer::start() else { return };
    let host = Host::start(&pg, "tx", POSTGRES, "");
    // BEGIN and a write in one request; nobody else sees it until COMMIT in another.
    assert_eq!(host.send("POST", "/begin", "pending body").0, 200);
    assert_eq!(pg.psql("SELECT count(*) FROM tx.notes"), "0");
    assert_eq!(
        pg.psql("SELECT count(*) FROM pg_stat_activity WHERE usename = 'pulp_tx' AND state = 'idle in transaction'"),
        "1"
    );
    assert_eq!(host.send("GET", "/notes/pending", ""), ok("pending body"));
    assert_eq!(host.send("POST", "/commit", "").0, 200);
    assert_eq!(pg.psql("SELECT body FROM tx.notes"), "pending body");

    // BEGIN and a write, then a trap before COMMIT.
    assert_eq!(host.send("POST", "/crash", "").0, 502);
    host.pulp.wait_for(&[
        "cell=tx ",
        "rolling back the transaction the failed cell left open",
    ]);
    host.pulp.wait_for_n(&["tx", "cell started"], 2);
    assert_eq!(host.send("PUT", "/notes/after", "after the crash").0, 201);
    assert_eq!(host.send("GET", "/notes", ""), ok("after\npending"));
    assert_eq!(
        pg.psql("SELECT count(*) FROM tx.notes WHERE key = 'crash'"),
        "0"
    );
    assert_eq!(
        pg.psql("SELECT count(*) FROM pg_stat_activity WHERE usename = 'pulp_tx' AND state LIKE 'idle in transaction%'"),
        "0"
    );
}

#[test]
fn statements_stop_at_call_timeout_ms_and_results_at_max_message_bytes() {
    let Some(pg) = PgServer::start() else { return };
    let host = Host::start(
        &pg,
        "limits",
        POSTGRES,
        "call_timeout_ms = 1000\nmax_message_bytes = 65536",
    );
    // The listener gives up on the reply at the same timeout; what matters is
    // that the statement stops and the cell serves again.
    let (status, _) = host.query("SELECT pg_sleep(30)");
    assert!([500, 502, 504].contains(&status), "{status}");
    let line = host
        .pulp
        .wait_for(&["storage.sqlite: statement interrupted", "cell=limits "]);
    assert!(line.contains("call_timeout_ms = 1000"), "{line}");
    // Even a session that lifts its own statement_timeout is stopped.
    let (status, _) = host.query("SET statement_timeout = 0; SELECT pg_sleep(30)");
    assert!([500, 502, 504].contains(&status), "{status}");
    let mut status = 502;
    for _ in 0..20 {
        status = host.send("PUT", "/notes/after", "after").0;
        if status != 502 {
            break;
        }
    }
    assert_eq!(status, 201);
    assert_eq!(
        pg.psql("SELECT count(*) FROM pg_stat_activity WHERE usename = 'pulp_limits' AND query LIKE '%pg_sleep%' AND state = 'active'"),
        "0"
    );

    // 1000 rows of 1000 bytes do not fit in 64 KiB; 10 do.
    let big = "SELECT repeat('x', 1000) FROM generate_series(1, 1000)";
    assert_eq!(host.query(big), code(413, 9));
    let (status, body) = host.query("SELECT repeat('x', 1000) FROM generate_series(1, 10)");
    assert_eq!((status, body.lines().count()), (200, 11));
}

#[test]
fn placeholders_types_and_errors_match_the_built_in() {
    let Some(pg) = PgServer::start() else { return };
    let host = Host::start(&pg, "typed", POSTGRES, "");
    // `?` outside literals, quoted names and comments becomes `$n`.
    let sql = "SELECT ? AS one, '?' AS \"two?\", ?::text AS three -- ?\n /* ? */";
    let (status, body) = host.send("POST", "/query?p1=a&p2=b", sql);
    assert_eq!(
        (status, body.as_str()),
        (200, "one\ttwo?\tthree\nt:a\tt:?\tt:b")
    );
    // A string parameter into an integer column is parsed by the server.
    assert_eq!(
        host.send("POST", "/query?p1=41", "SELECT ? + 1 AS n").1,
        "n\ni:42"
    );
    assert_eq!(
        host.query(
            "SELECT 1::int2 AS a, 2::int4 AS b, 3::int8 AS c, true AS d, 1.5::float4 AS e, \
             2.25::float8 AS f, 12::numeric AS g, 12.5::numeric AS h, NULL AS i, 'x'::bytea AS j, \
             '2024-02-29'::date AS k, '2024-02-29 10:11:12.5'::timestamp AS l, \
             '00000000-0000-0000-0000-00000000002a'::uuid AS m, '{\"a\": 1}'::jsonb AS n"
        )
        .1,
        "a\tb\tc\td\te\tf\tg\th\ti\tj\tk\tl\tm\tn\n\
         i:1\ti:2\ti:3\ti:1\tf:1.5\tf:2.25\ti:12\tf:12.5\tNULL\tb:78\tt:2024-02-29\t\
         t:2024-02-29 10:11:12.5\tt:00000000-0000-0000-0000-00000000002a\tt:{\"a\": 1}"
    );
    assert_eq!(host.send("GET", "/types", ""), ok("ok"));
    // exec_result: rows affected, and the session's last sequence value.
    assert_eq!(
        host.send(
            "POST",
            "/exec",
            "CREATE TABLE seq (id SERIAL PRIMARY KEY, v TEXT)"
        )
        .0,
        200
    );
    assert_eq!(
        host.send("POST", "/sql", "INSERT INTO seq (v) VALUES ('a'), ('b')"),
        ok("rows_affected=2 last_insert_id=2")
    );
    assert_eq!(
        host.send("POST", "/sql", "UPDATE seq SET v = 'c'"),
        ok("rows_affected=2 last_insert_id=2")
    );
    // A Postgres error is code 5, the server's message in a WARN line.
    assert_eq!(host.query("SELECT * FROM nosuch"), code(500, 5));
    let line = host
        .pulp
        .wait_for(&["relation \"nosuch\" does not exist", "cell=typed "]);
    assert!(line.contains("WARN"), "{line}");
    // A type without a MessagePack value says how to get one.
    assert_eq!(host.query("SELECT point(1, 2) AS p"), code(500, 5));
    host.pulp.wait_for(&["column \"p\"", "p::text"]);
    // Prepared statements the cell drops cost at most one failed call.
    assert_eq!(host.query("SELECT 7 AS n"), ok("n\ni:7"));
    assert_eq!(host.send("POST", "/exec", "DEALLOCATE ALL").0, 200);
    let _ = host.query("SELECT 7 AS n");
    assert_eq!(host.query("SELECT 7 AS n"), ok("n\ni:7"));
    // Bad input gets the built-in's codes.
    assert_eq!(host.send("POST", "/exec", "   "), code(400, 1));
    assert_eq!(host.send("POST", "/query?p1=x", "SELECT 1"), code(500, 5));
}

#[test]
fn an_unreachable_server_stops_start_up_with_one_error_line() {
    // Nothing listens on a port just released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let scratch = Scratch::new();
    let config = format!(
        "url = \"postgresql://postgres:pw@127.0.0.1:{port}/postgres\"\nconnect_timeout_ms = 2000\n"
    );
    install_extensions(&scratch, &artifacts().lib_dir, &config, "");
    let manifest = shared_notes(&scratch, "notes", POSTGRES, "", "");
    let (status, log) = run(&scratch.args(&[manifest]));
    assert_eq!(status.code(), Some(1), "{log}");
    assert_eq!(count(&log, "ERROR"), 1, "{log}");
    let line = log.lines().find(|l| l.contains("ERROR")).unwrap();
    assert!(
        line.contains("cannot connect to PostgreSQL as postgres@127.0.0.1:")
            && line.contains("notes"),
        "{line}"
    );
}
