"""Fuzz and fault suite: statements a hostile or careless tenant might send, through a real Flight SQL
client (ADBC) against a real `omnisql dev`, with limits set low enough to be met.

Four kinds of statement, in rounds:
- generated from a grammar over the live catalog (tables and columns read from information_schema):
  projections, filters, IN lists, joins, aggregates, ORDER BY, LIMIT, UNION, CTEs, subqueries, functions;
- mutations of real queries (tokens dropped, repeated, swapped, or replaced by keywords and punctuation);
- garbage (random text, deep nesting, long names);
- a catalogue of resource bombs (huge strings and arrays, endless series, cross joins, recursion, long
  IN lists, files and settings).
First, a query mix runs while the sandbox answers with 5xx, 429 storms, garbage and truncated JSON, slow
bodies and broken connections: every answer must be either an error or exactly the answer without faults.

Pass: 0 process deaths, 0 statements running past their timeout + 1 s, every error has a message, RSS
under the memory limit plus the measured overhead, no partial result reported as success, 0 panics in
the log.

`e2e/.venv/bin/python e2e/fuzz.py --statements 10000 --report docs/fuzz.md` runs a long pass;
`test_fuzz.py` runs a short one in CI.
"""

import argparse
import concurrent.futures
import json
import pathlib
import random
import sys
import tempfile
import threading
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from conftest import Dev  # noqa: E402

MEMORY_LIMIT = 512 << 20
# Measured: what the process holds beyond query memory (code, runtime, sandbox, control plane, response
# cache of 64 MiB, results on their way to the client).
RSS_OVERHEAD = 384 << 20
TIMEOUT_S = 3
KEYWORDS = ["SELECT", "FROM", "WHERE", "JOIN", "ON", "GROUP BY", "ORDER BY", "LIMIT", "UNION ALL", "(", ")", ",",
            "AND", "OR", "NOT", "IN", "LIKE", "IS NULL", "*", "=", "'", ";", "COPY", "TO", "CREATE", "SET", "WITH"]

BOMBS = [
    "SELECT repeat('x', 2000000000)",
    "SELECT lpad('x', 2000000000, 'yz')",
    "SELECT array_repeat(repeat('x', 1000), 100000000)",
    "SELECT array_agg(v) FROM generate_series(1, 300000000) t(v)",
    "SELECT string_agg(repeat('x', 1000), ',') FROM generate_series(1, 10000000) t(v)",
    "SELECT count(*) FROM generate_series(1, 5000000000)",
    "SELECT count(*) FROM github.issues a, github.issues b, github.issues c, github.issues d",
    "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r",
    "WITH RECURSIVE r(s) AS (SELECT 'x' UNION ALL SELECT s || s FROM r) SELECT length(s) FROM r",
    "SELECT v FROM generate_series(1, 50000000) t(v) ORDER BY v DESC",
    "SELECT v % 1000003 AS k, count(*) FROM generate_series(1, 50000000) t(v) GROUP BY 1",
    " UNION ALL ".join(["SELECT 1"] * 3000),
    "SELECT " + " + ".join(["1"] * 20000),
    "SELECT " + "(" * 5000 + "1" + ")" * 5000,
    "SELECT * FROM github.users WHERE login IN (" + ", ".join(f"'nobody-{i}'" for i in range(3000)) + ")",
    "SELECT * FROM slack.messages WHERE channel_id IN (" + ", ".join(f"'C{i:08d}'" for i in range(2000)) + ")",
    "SELECT * FROM salesforce.account WHERE name IN (" + ", ".join(f"'No Such {i}'" for i in range(5000)) + ")",
    "SELECT regexp_replace(repeat('a', 100000), '(a*)*b', 'c')",
    "SELECT range(TIMESTAMP '1970-01-01', TIMESTAMP '2200-01-01', INTERVAL '1 second')",
    "COPY (SELECT 1) TO '/tmp/omnisql-fuzz-written.csv'",
    "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'",
    "SELECT * FROM '/etc/passwd'",
    "CREATE TABLE x AS SELECT 1",
    "SET datafusion.execution.batch_size = 0",
    "SET datafusion.execution.target_partitions = 100000",
    "SELECT 1; SELECT 2",
    "SELECT '" + "x" * (2 << 20) + "'",
]

MIX = [
    "SELECT count(*) AS n FROM github.issues WHERE state = 'open'",
    "SELECT login, email FROM github.users ORDER BY login LIMIT 20",
    "SELECT name, annual_revenue FROM salesforce.account WHERE annual_revenue > 1000000 ORDER BY name",
    "SELECT count(*) AS n FROM slack.users",
    "SELECT c.email, a.name FROM salesforce.contact c JOIN salesforce.account a ON a.id = c.account_id "
    "ORDER BY c.email LIMIT 50",
    "SELECT i.number, i.title FROM github.issues i WHERE i.repo_full_name = 'acme/api' ORDER BY i.number LIMIT 30",
]


def start_dev(tmp: pathlib.Path, timeout_s: int) -> Dev:
    """`omnisql dev` with limits low enough for the bombs to meet."""
    return Dev(tmp, "--memory-limit", str(MEMORY_LIMIT), "--statement-timeout", f"{timeout_s}s")


def rss(pid: int) -> int:
    """Resident memory of a process, in bytes."""
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def set_faults(dev: Dev, faults: dict):
    for app in ("github", "salesforce", "slack"):
        dev.sandbox(app, "/_sandbox/settings", {"faults": faults})


class Generator:
    """Statements from a grammar over the catalog, mutations of real ones, and garbage."""

    def __init__(self, rng: random.Random, columns: dict):
        self.rng = rng
        self.columns = columns  # "schema.table" -> [(column, type)]
        self.tables = sorted(columns)

    def literal(self, kind: str) -> str:
        r = self.rng
        if "Int" in kind or "Float" in kind or "Decimal" in kind:
            return str(r.choice([0, 1, -1, 7, 42, 1000000, 2**31, 2**63 - 1]))
        if "Bool" in kind:
            return r.choice(["true", "false"])
        if "Timestamp" in kind or "Date" in kind:
            return r.choice(["TIMESTAMP '2024-01-01T00:00:00Z'", "TIMESTAMP '1999-12-31T00:00:00Z'", "now()"])
        return r.choice(["'open'", "'closed'", "'acme/api'", "''", "'a'", "'%'", "'O''Brien'", "'ünï'", "NULL"])

    def predicate(self, alias: str, table: str) -> str:
        r = self.rng
        col, kind = r.choice(self.columns[table])
        c = f'{alias}."{col}"'
        choice = r.randrange(9)
        if choice == 0:
            return f"{c} = {self.literal(kind)}"
        if choice == 1:
            values = ", ".join(self.literal(kind) for _ in range(r.randint(1, 40)))
            return f"{c} {'NOT ' if r.random() < 0.3 else ''}IN ({values})"
        if choice == 2:
            return f"{c} IS {'NOT ' if r.random() < 0.5 else ''}NULL"
        if choice == 3 and "Utf8" in kind:
            return f"{c} LIKE '{r.choice(['%a%', 'acme%', '_', '%'])}'"
        if choice == 4:
            return f"{c} {r.choice(['<', '<=', '>', '>=', '<>'])} {self.literal(kind)}"
        if choice == 5:
            return f"NOT ({self.predicate(alias, table)})"
        if choice == 6:
            return f"({self.predicate(alias, table)} OR {self.predicate(alias, table)})"
        if choice == 7 and "Utf8" in kind:
            return f"length({c}) > {r.randint(0, 20)}"
        return f"{c} = {c}"

    def expression(self, alias: str, table: str) -> str:
        r = self.rng
        col, kind = r.choice(self.columns[table])
        c = f'{alias}."{col}"'
        if "Utf8" in kind:
            return r.choice([c, f"upper({c})", f"substr({c}, 1, 3)", f"coalesce({c}, 'none')", f"length({c})",
                             f"concat({c}, '-x')", f"split_part({c}, '/', 1)", f"md5({c})"])
        if "Int" in kind or "Float" in kind:
            return r.choice([c, f"{c} + 1", f"abs({c})", f"{c} * 2", f"coalesce({c}, 0)", f"{c} / 3"])
        return c

    def select(self, depth: int = 0) -> str:
        r = self.rng
        tables = [r.choice(self.tables) for _ in range(r.choice([1, 1, 1, 2, 2, 3]))]
        from_clause = f"{tables[0]} t0"
        for i, t in enumerate(tables[1:], 1):
            a_col, _ = r.choice(self.columns[tables[0]])
            b_col, _ = r.choice(self.columns[t])
            join = r.choice(["JOIN", "LEFT JOIN"])
            from_clause += f' {join} {t} t{i} ON CAST(t0."{a_col}" AS VARCHAR) = CAST(t{i}."{b_col}" AS VARCHAR)'
        where = " AND ".join(self.predicate(f"t{i}", t) for i, t in enumerate(tables) for _ in range(r.randint(0, 2)))
        if r.random() < 0.35:
            group_expr = self.expression("t0", tables[0])
            select_list = f"{group_expr} AS g, count(*) AS n"
            tail = " GROUP BY 1"
            if r.random() < 0.5:
                tail += " ORDER BY 2 DESC"
        else:
            picks = [r.randrange(len(tables)) for _ in range(r.randint(1, 4))]
            select_list = ", ".join(f"{self.expression(f't{i}', tables[i])} AS c{j}" for j, i in enumerate(picks))
            tail = ""
            if r.random() < 0.5:
                tail += " ORDER BY 1"
        if r.random() < 0.8:
            tail += f" LIMIT {r.choice([1, 5, 20, 100])}"
        sql = f"SELECT {select_list} FROM {from_clause}" + (f" WHERE {where}" if where else "") + tail
        if depth < 2 and r.random() < 0.15:
            sql = f"SELECT count(*) AS n FROM ({sql}) s"
        if depth < 2 and r.random() < 0.1:
            sql = f"WITH q AS ({self.select(depth + 1)}) SELECT * FROM q LIMIT 10"
        if depth < 2 and r.random() < 0.1:
            sql = f"SELECT count(*) AS n FROM ({self.select(depth + 1)}) a UNION ALL SELECT count(*) FROM ({self.select(depth + 1)}) b"
        if r.random() < 0.05:
            sql = "EXPLAIN " + sql
        return sql

    def mutate(self, sql: str) -> str:
        r = self.rng
        tokens = sql.split(" ")
        for _ in range(r.randint(1, 3)):
            if not tokens:
                break
            i = r.randrange(len(tokens))
            op = r.randrange(4)
            if op == 0:
                tokens.pop(i)
            elif op == 1:
                tokens.insert(i, tokens[i] * r.randint(2, 4))
            elif op == 2:
                j = r.randrange(len(tokens))
                tokens[i], tokens[j] = tokens[j], tokens[i]
            else:
                tokens.insert(i, r.choice(KEYWORDS))
        return " ".join(tokens)

    def garbage(self) -> str:
        r = self.rng
        kind = r.randrange(5)
        if kind == 0:
            return "".join(chr(r.randrange(32, 0x2FF)) for _ in range(r.randint(1, 200)))
        if kind == 1:
            return "SELECT " + "(" * r.randint(10, 400) + "1"
        if kind == 2:
            return f'SELECT 1 AS "{"x" * r.randint(100, 100000)}"'
        if kind == 3:
            return "SELECT " + ", ".join(f"'{chr(r.randrange(0x20, 0x7E))}'" for _ in range(r.randint(1, 3000)))
        return r.choice(["", ";", "--", "/*", "SELECT", "SELECT FROM", "\x00", "SELECT 1 FROM github.nope",
                         "SELECT * FROM omnisql.nope", "SELECT \"unterminated", "SELECT 'unterminated"])


def rows_of(table) -> list:
    return sorted(json.dumps(r, sort_keys=True, default=str) for r in table.to_pylist())


class Run:
    """One pass: statements through ADBC, each checked; the tallies make the report."""

    def __init__(self, dev: Dev, timeout_s: int):
        import adbc_driver_flightsql.dbapi as flight_sql
        self.flight_sql = flight_sql
        self.dev = dev
        self.timeout_s = timeout_s
        self.local = threading.local()
        self.lock = threading.Lock()
        self.stats = {"statements": 0, "ok": 0, "errors": 0, "no_message": 0, "over_time": 0, "deaths": 0,
                      "partial_results": 0, "max_rss": 0, "max_seconds": 0.0, "fault_runs": 0, "fault_errors": 0}
        self.examples: dict[str, str] = {}

    def connection(self):
        """This thread's client connection."""
        if getattr(self.local, "conn", None) is None:
            self.local.conn = self.flight_sql.connect(
                self.dev.endpoints["flight_sql"],
                db_kwargs={"adbc.flight.sql.authorization_header": f"Bearer {self.dev.endpoints['token']}"})
        return self.local.conn

    def reconnect(self):
        try:
            self.local.conn.close()
        except Exception:
            pass
        self.local.conn = None

    def execute(self, sql: str):
        """Runs one statement: (table or None, error message or None, seconds)."""
        started = time.monotonic()
        cur = self.connection().cursor()
        try:
            cur.execute(sql)
            table = cur.fetch_arrow_table()
            return table, None, time.monotonic() - started
        except Exception as e:  # every client-side error class counts: the check is its message
            return None, str(e) or type(e).__name__, time.monotonic() - started
        finally:
            try:
                cur.close()
            except Exception:
                self.reconnect()

    def check(self, kind: str, sql: str):
        table, error, seconds = self.execute(sql)
        with self.lock:
            self.tally(kind, sql, error, seconds)

    def tally(self, kind: str, sql: str, error, seconds: float):
        s = self.stats
        s["statements"] += 1
        s["max_seconds"] = max(s["max_seconds"], seconds)
        if error is None:
            s["ok"] += 1
        else:
            s["errors"] += 1
            message = error.split("] ", 1)[-1].strip()
            if not message or message in ("INTERNAL:", "UNKNOWN:"):
                s["no_message"] += 1
                self.examples.setdefault("no_message", sql[:300])
            self.examples.setdefault(f"error:{kind}", f"{sql[:200]} → {error[:300]}")
        if seconds > self.timeout_s + 1:
            s["over_time"] += 1
            self.examples.setdefault("over_time", f"{seconds:.1f} s: {sql[:300]}")
        if self.dev.proc.poll() is not None:
            s["deaths"] += 1
            self.examples.setdefault("death", sql[:300])
            raise RuntimeError(f"the data plane died on: {sql[:300]}")
        if s["statements"] % 20 == 0:
            s["max_rss"] = max(s["max_rss"], rss(self.dev.proc.pid))

    def faulted_mix(self, rounds: int, rng: random.Random):
        """The mix without faults, then under faults: each answer is an error or the same rows."""
        expected = {}
        for sql in MIX:
            table, error, _ = self.execute("SET omnisql.max_staleness = '0'")
            table, error, _ = self.execute(sql)
            assert error is None, f"{sql}: {error}"
            expected[sql] = rows_of(table)
        set_faults(self.dev, {"server_error_rate": 0.05, "rate_limit_rate": 0.05, "retry_after_secs": 0,
                         "malformed_rate": 0.03, "truncated_rate": 0.03, "reset_rate": 0.03,
                              "slow_body_ms": 20})
        try:
            for _ in range(rounds):
                sql = rng.choice(MIX)
                self.execute("SET omnisql.max_staleness = '0'")
                table, error, seconds = self.execute(sql)
                self.stats["fault_runs"] += 1
                self.stats["statements"] += 1
                if seconds > self.timeout_s + 1:
                    self.stats["over_time"] += 1
                if error is not None:
                    self.stats["fault_errors"] += 1
                    if not error.strip():
                        self.stats["no_message"] += 1
                elif rows_of(table) != expected[sql]:
                    self.stats["partial_results"] += 1
                    self.examples.setdefault("partial_result", sql)
        finally:
            set_faults(self.dev, {})

    def panics(self) -> int:
        return sum(1 for line in self.dev.log if "panicked" in line)

    def verdict(self) -> list[str]:
        s = self.stats
        failures = []
        for key in ("deaths", "over_time", "no_message", "partial_results"):
            if s[key]:
                failures.append(f"{key}: {s[key]}")
        if s["max_rss"] > MEMORY_LIMIT + RSS_OVERHEAD:
            failures.append(f"RSS {s['max_rss'] >> 20} MiB over {(MEMORY_LIMIT + RSS_OVERHEAD) >> 20} MiB")
        if self.panics():
            failures.append(f"panics in the log: {self.panics()}")
        return failures


def catalog(run: Run) -> dict:
    table, error, _ = run.execute(
        "SELECT table_schema, table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema IN ('github', 'salesforce', 'slack') AND table_name <> 'search_issues'")
    assert error is None, error
    columns: dict = {}
    for r in table.to_pylist():
        columns.setdefault(f"{r['table_schema']}.\"{r['table_name']}\"", []).append((r["column_name"], r["data_type"]))
    assert {t.split(".")[0] for t in columns} == {"github", "salesforce", "slack"}, f"information_schema lists {sorted(columns)}"
    return columns


def fuzz(statements: int, seed: int, timeout_s: int = TIMEOUT_S, fault_rounds: int = 30,
         clients: int = 4) -> tuple[Run, float]:
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        dev = start_dev(pathlib.Path(tmp), timeout_s)
        try:
            run = Run(dev, timeout_s)
            rng = random.Random(seed)
            gen = Generator(rng, catalog(run))
            # Faults first, while the APIs' quotas are fresh, so answers can be compared.
            run.faulted_mix(fault_rounds, rng)
            for sql in BOMBS:
                run.check("bomb", sql)
            seeds = MIX + [gen.select() for _ in range(20)]
            batch = []
            for i in range(statements):
                roll = rng.random()
                if roll < 0.6:
                    batch.append(("generated", gen.select()))
                elif roll < 0.9:
                    batch.append(("mutated", gen.mutate(rng.choice(seeds))))
                else:
                    batch.append(("garbage", gen.garbage()))
            # Several clients at once, as a tenant's tools would send them; most statements wait on rate
            # limits, not on the CPU.
            with concurrent.futures.ThreadPoolExecutor(max_workers=clients) as pool:
                for done in pool.map(lambda kind_sql: run.check(*kind_sql), batch):
                    pass
            run.stats["max_rss"] = max(run.stats["max_rss"], rss(dev.proc.pid))
            assert not pathlib.Path("/tmp/omnisql-fuzz-written.csv").exists(), "a statement wrote a file"
        finally:
            dev.stop()
    return run, time.monotonic() - started


def report(run: Run, seconds: float, seed: int) -> str:
    s = run.stats
    lines = [
        "# Fuzz and fault suite",
        "",
        f"`e2e/.venv/bin/python e2e/fuzz.py --statements {s['statements'] - len(BOMBS) - s['fault_runs']} --seed {seed}` "
        f"against `omnisql dev` (debug build, `--memory-limit {MEMORY_LIMIT >> 20}MiB --statement-timeout {run.timeout_s}s`), "
        "generated statements over 4 client connections at once.",
        "",
        "| measure | value |",
        "|---|---|",
    ]
    for key, value in s.items():
        shown = f"{value >> 20} MiB" if key == "max_rss" else (f"{value:.2f}" if isinstance(value, float) else value)
        lines.append(f"| {key} | {shown} |")
    lines += [f"| panics in the log | {run.panics()} |", f"| wall time | {seconds:.0f} s |", "",
              f"Verdict: {'PASS' if not run.verdict() else 'FAIL: ' + '; '.join(run.verdict())}", "", "Examples:", ""]
    lines += [f"- {k}: `{v}`" for k, v in sorted(run.examples.items())]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--statements", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--fault-rounds", type=int, default=200)
    parser.add_argument("--report", type=pathlib.Path)
    args = parser.parse_args()
    run, seconds = fuzz(args.statements, args.seed, fault_rounds=args.fault_rounds)
    text = report(run, seconds, args.seed)
    print(text)
    if args.report:
        args.report.write_text(text)
    sys.exit(1 if run.verdict() else 0)


if __name__ == "__main__":
    main()
