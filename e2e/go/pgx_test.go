// OmniSQL through pgx (Go's Postgres driver) over the Postgres wire protocol: the Go cells of the client
// matrix. Run by e2e/test_go.py, which starts `omnisql dev` and passes its endpoint in the environment.
package pgx_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

func connect(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func TestQueryAndTypedParameters(t *testing.T) {
	conn := connect(t, os.Getenv("OMNISQL_PG_DSN"))
	ctx := context.Background()
	// pgx prepares every statement (extended protocol) and binds its arguments in binary.
	rows, err := conn.Query(ctx,
		"SELECT number, title, created_at FROM github.issues WHERE repo_full_name = $1 AND number > $2 ORDER BY number",
		"acme/api", int64(2))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for rows.Next() {
		var number int64
		var title string
		var created time.Time
		if err := rows.Scan(&number, &title, &created); err != nil {
			t.Fatal(err)
		}
		if number <= 2 || title == "" || created.IsZero() {
			t.Fatalf("row %d %q %v", number, title, created)
		}
		n++
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatal("no rows")
	}
}

func TestMetadataBrowsing(t *testing.T) {
	conn := connect(t, os.Getenv("OMNISQL_PG_DSN"))
	rows, err := conn.Query(context.Background(),
		"SELECT table_name FROM information_schema.tables WHERE table_schema = $1", "salesforce")
	if err != nil {
		t.Fatal(err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(tables, ","), "account") {
		t.Fatalf("tables: %v", tables)
	}
}

func TestErrorsCarrySQLState(t *testing.T) {
	conn := connect(t, os.Getenv("OMNISQL_PG_DSN"))
	_, err := conn.Exec(context.Background(), "SELECT * FROM github.nope")
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "42000" || !strings.Contains(pgErr.Message, "github.nope") {
		t.Fatalf("error: %v", err)
	}
}

func sandbox(t *testing.T, path, body string) string {
	t.Helper()
	url := os.Getenv("OMNISQL_GITHUB_URL") + path
	var resp *http.Response
	var err error
	if body == "" {
		resp, err = http.Get(url)
	} else {
		resp, err = http.Post(url, "application/json", strings.NewReader(body))
	}
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func githubRequests(t *testing.T) int {
	var stats struct{ Total int }
	if err := json.Unmarshal([]byte(sandbox(t, "/_sandbox/stats", "")), &stats); err != nil {
		t.Fatal(err)
	}
	return stats.Total
}

// A cancelled context makes pgx send a cancel request: the statement stops, and so do its upstream requests.
func TestCancelByContext(t *testing.T) {
	conn := connect(t, os.Getenv("OMNISQL_PG_DSN"))
	if _, err := conn.Exec(context.Background(), "SET omnisql.max_staleness = '0'"); err != nil {
		t.Fatal(err)
	}
	sandbox(t, "/_sandbox/settings", `{"latency": {"fixed_ms": 1500, "jitter_pct": 0}}`)
	defer sandbox(t, "/_sandbox/settings", `{"latency": {"fixed_ms": 0, "jitter_pct": 0}}`)
	sandbox(t, "/_sandbox/stats/reset", "{}")
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for githubRequests(t) == 0 {
			time.Sleep(50 * time.Millisecond)
		}
		cancel()
	}()
	started := time.Now()
	rows, err := conn.Query(ctx, "SELECT login, email FROM github.users")
	if err == nil {
		for rows.Next() {
		}
		err = rows.Err()
	}
	if err == nil {
		t.Fatal("the cancelled statement returned all its rows")
	}
	if time.Since(started) > 20*time.Second {
		t.Fatalf("cancelling took %v", time.Since(started))
	}
	atCancel := githubRequests(t)
	time.Sleep(3500 * time.Millisecond)
	if after := githubRequests(t); after-atCancel > 16 || after >= 40 {
		t.Fatalf("upstream requests went on: %d at cancel, %d after", atCancel, after)
	}
}

func TestTLSVerifiesTheServer(t *testing.T) {
	conn := connect(t, os.Getenv("OMNISQL_PG_TLS_DSN"))
	var name string
	if err := conn.QueryRow(context.Background(), "SELECT name FROM slack.channels WHERE name = $1", "general").Scan(&name); err != nil || name != "general" {
		t.Fatalf("%q %v", name, err)
	}
	if _, err := pgx.Connect(context.Background(), os.Getenv("OMNISQL_PG_UNTRUSTED_DSN")); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("an untrusted certificate was accepted: %v", err)
	}
}
