package main

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/internal/test/e2e"
)

// TestReindex is a server upgraded to a version with search, on SQLite and on PostgreSQL:
// its history is stored but not indexed, the search reader's log offset at the end. The
// index is emptied (its offset kept) with the server stopped, and /search finds nothing of
// the history after a restart; `dendrite reindex` then rebuilds it from the roomserver's
// database, and /search finds every message and the room name again, but not a redacted
// message. A second reindex changes nothing.
func TestReindex(t *testing.T) {
	for _, engine := range []string{"sqlite", "postgres"} {
		t.Run(engine, func(t *testing.T) {
			dataDir := t.TempDir()
			config := e2e.WriteConfig(t, dataDir)
			searchDSN := "file:" + filepath.Join(dataDir, "searchapi.db")
			var env []string
			if engine == "postgres" {
				searchDSN = test.PostgresDSN(t)
				env = append(env, "DENDRITE_GLOBAL_DATABASE_CONNECTION_STRING="+searchDSN)
			}
			s := startServer(t, config, env...)
			reindexStory(t, s, searchDSN)
		})
	}
}

func reindexStory(t *testing.T, s *server, searchDSN string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	alice := e2e.Register(t, s.URL(), "reindexer")
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Name: "quokkaroom"})
	if err != nil {
		t.Fatal(err)
	}
	const messages = 40
	for i := range messages {
		if _, err := alice.SendText(ctx, created.RoomID, fmt.Sprintf("wombatword number %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	secret, err := alice.SendMessageEvent(ctx, created.RoomID, event.EventMessage, map[string]string{"msgtype": "m.text", "body": "numbatword"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.RedactEvent(ctx, created.RoomID, secret.EventID); err != nil {
		t.Fatal(err)
	}
	want := map[string]int{"wombatword": messages, "quokkaroom": 1, "numbatword": 0}
	wantCounts(t, alice, want)

	s.stop()
	wipeSearchIndex(t, searchDSN)
	s.start(t)
	wantCounts(t, alice, map[string]int{"wombatword": 0, "quokkaroom": 0, "numbatword": 0})

	for run := range 2 {
		s.stop()
		cmd := exec.Command(binary, "reindex", "--config", s.config)
		cmd.Env = append(cmd.Environ(), s.env...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("reindex run %d: %v\n%s", run, err, out)
		}
		if !strings.Contains(string(out), "in 1 rooms") {
			t.Fatalf("reindex run %d: %s", run, out)
		}
		s.start(t)
		wantCounts(t, alice, want)
	}
}

// wantCounts checks how many results /search counts for each word. /search waits for the
// index to catch up with the log before it answers, so a count is final when it comes.
func wantCounts(t *testing.T, c *mautrix.Client, want map[string]int) {
	t.Helper()
	for word, n := range want {
		if got := e2e.SearchCount(t, c, word); got != n {
			t.Fatalf("/search counts %d results for %q, want %d", got, word, n)
		}
	}
}

// wipeSearchIndex empties the search index of a stopped server and keeps the search
// reader's log offset, as a server that had history before it had search.
func wipeSearchIndex(t *testing.T, dsn string) {
	t.Helper()
	db, err := sqlutil.Open(dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close() // nolint: errcheck // only deletes, committed by then
	for _, stmt := range []string{"DELETE FROM searchapi_text", "DELETE FROM searchapi_events"} {
		if _, err := db.ExecContext(context.Background(), stmt); err != nil {
			t.Fatal(err)
		}
	}
}
