package roomserver_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/internal/test/roomtest"
	"github.com/matrix-org/dendrite/roomserver"
	"github.com/matrix-org/dendrite/roomserver/api"
)

// refusedType is the event type the tests' trigger makes the database refuse.
const refusedType = "org.example.refused"

// poisonHarness is a roomserver whose input log lives in a database of its own (so the
// roomserver's database can fail while writers still produce), with the log's metrics.
type poisonHarness struct {
	*harness
	reg *prometheus.Registry
}

func startPoison(t *testing.T, db *sqlutil.DB) *poisonHarness {
	t.Helper()
	var logDB *sqlutil.DB
	var err error
	if db.Engine() == sqlutil.SQLite {
		logDB, err = sqlutil.Open("file:" + filepath.Join(t.TempDir(), "log.db"))
	} else {
		logDB, err = sqlutil.Open(test.PostgresDSN(t))
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = logDB.Close() }) // nothing to do about a failed close in cleanup
	log, err := eventlog.NewEmbedded(context.Background(), logDB, eventlog.Config{DefaultPartitions: 4})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	logger := logrus.New()
	logger.SetLevel(logrus.ErrorLevel)
	reg := prometheus.NewRegistry()
	key := roomtest.NewKey(t)
	rs, err := roomserver.New(ctx, roomserver.Deps{
		Cfg: &config.RoomServer{Shards: 1}, ServerName: serverName, KeyID: "ed25519:test", PrivateKey: key,
		DB: db, Log: log, InputTopic: "in", OutputTopic: "out", Logger: logrus.NewEntry(logger), LogMetrics: eventlog.NewMetrics(reg),
	})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, rs: rs, key: key, output: "out", log: log, cancel: cancel, done: make(chan error, 1),
		input: &api.Input{Log: log, Topic: "in", Wait: rs.API(), Timeout: time.Minute}}
	go func() { h.done <- rs.Run(ctx) }()
	return &poisonHarness{harness: h, reg: reg}
}

// counter is the roomserver consumer's counter name on the log's metrics.
func (h *poisonHarness) counter(name string) float64 {
	h.t.Helper()
	families, err := h.reg.Gather()
	if err != nil {
		h.t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "consumer" && l.GetValue() == "roomserver" {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// deadLetters are the roomserver's dead letters' errors.
func deadLetters(t *testing.T, db *sqlutil.DB) []string {
	t.Helper()
	rows, err := db.QueryContext(context.Background(), "SELECT error FROM roomserver_dead_letters ORDER BY record_offset")
	if err != nil {
		t.Fatal(err)
	}
	causes, err := sqlutil.Column[string](rows)
	if err != nil {
		t.Fatal(err)
	}
	return causes
}

// refuse makes the database refuse to store an event of refusedType: a trigger raises an
// error (PostgreSQL: raise_exception; SQLite: a constraint failure).
func refuse(t *testing.T, db *sqlutil.DB) {
	t.Helper()
	ctx := context.Background()
	when := "NEW.type_nid IN (SELECT type_nid FROM roomserver_event_types WHERE event_type = '" + refusedType + "')"
	stmts := []string{"CREATE TRIGGER refuse_test BEFORE INSERT ON roomserver_events WHEN " + when +
		" BEGIN SELECT RAISE(ABORT, 'the test refuses this event'); END"}
	if db.Engine() == sqlutil.Postgres {
		stmts = []string{`CREATE FUNCTION refuse_test() RETURNS trigger LANGUAGE plpgsql AS $f$ BEGIN
			IF ` + when + ` THEN RAISE EXCEPTION 'the test refuses this event'; END IF; RETURN NEW; END $f$`,
			"CREATE TRIGGER refuse_test BEFORE INSERT ON roomserver_events FOR EACH ROW EXECUTE FUNCTION refuse_test()"}
	}
	for _, s := range stmts {
		if _, err := db.ExecContext(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
}

// TestFailingInputIsDeadLettered: an input record the database refuses every time is tried
// MaxAttempts times, then dead-lettered with its error; its writer gets 500 M_UNKNOWN as
// soon as that happens (not after the input wait timeout), and the next message of the
// same room, in the same partition, is placed. A record that does not decode is
// dead-lettered at once and its writer gets M_BAD_JSON.
func TestFailingInputIsDeadLettered(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := startPoison(t, db)
		defer h.stop()
		alice := "@alice:" + serverName
		roomID := h.newRoom(gomatrixserverlib.RoomVersionV10, alice)
		refuse(t, db)

		// Five attempts with waits of 0.1, 0.2, 0.4 and 0.8s between them: submit gives up
		// after 10s, while the writer's input wait timeout is a minute.
		res := h.submit(api.InputRoomEvents{RoomID: roomID, Events: []api.InputRoomEvent{roomtest.Proto(alice, refusedType, nil, map[string]string{"body": "no"})}})
		if len(res) != 1 || res[0].Err == nil || res[0].Err.Code != "M_UNKNOWN" || res[0].Err.Status != http.StatusInternalServerError {
			t.Fatalf("refused event: want 500 M_UNKNOWN, got %+v", res)
		}
		if v := h.counter("dendrite_eventlog_consumer_failures_total"); v != 5 {
			t.Fatalf("%v failed attempts, want MaxAttempts (5)", v)
		}
		if v := h.counter("dendrite_eventlog_dead_letters_total"); v != 1 {
			t.Fatalf("%v dead letters counted, want 1", v)
		}
		if causes := deadLetters(t, db); len(causes) != 1 || !strings.Contains(causes[0], "the test refuses this event") {
			t.Fatalf("dead letters: %q", causes)
		}

		res = h.submit(api.InputRoomEvents{RoomID: roomID, Events: []api.InputRoomEvent{roomtest.Proto(alice, "m.room.message", nil, map[string]string{"body": "yes"})}})
		if len(res) != 1 || res[0].Err != nil || res[0].EventID == "" {
			t.Fatalf("the next message: %+v", res)
		}
		evs, err := h.rs.API().QueryEventsByID(context.Background(), &api.QueryEventsByIDRequest{RoomID: roomID, EventIDs: []string{res[0].EventID}})
		if err != nil || len(evs.Events) != 1 {
			t.Fatalf("the next message is not stored: %+v %v", evs, err)
		}

		// A message that does not decode (room_id is a number).
		pos, err := h.log.Produce(context.Background(), "in", eventlog.Message{Key: []byte(roomID), Value: []byte(`{"room_id":7,"message_id":"m1","events":[{},{}]}`)})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		bad, err := h.rs.API().QueryInputResult(ctx, &api.QueryInputResultRequest{Partition: pos[0].Partition, Offset: pos[0].Offset, MessageID: "m1"})
		if err != nil {
			t.Fatal(err)
		}
		if len(bad.Results) != 2 || bad.Results[0].Err == nil || bad.Results[0].Err.Code != "M_BAD_JSON" {
			t.Fatalf("undecodable message: want M_BAD_JSON for both events, got %+v", bad.Results)
		}
		if causes := deadLetters(t, db); len(causes) != 2 {
			t.Fatalf("dead letters after the undecodable message: %q", causes)
		}
	})
}

// TestUnavailableDatabaseIsRetried: while the roomserver's database cannot be written
// (PostgreSQL refuses connections and dropped the open ones; SQLite is locked by another
// writer), its input record is retried past MaxAttempts and never dead-lettered; the
// writer waits, and gets its event once the database is back.
func TestUnavailableDatabaseIsRetried(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		h := startPoison(t, db)
		defer h.stop()
		alice := "@alice:" + serverName
		roomID := h.newRoom(gomatrixserverlib.RoomVersionV10, alice)

		restore := takeDown(t, db)
		type outcome struct {
			res *api.InputRoomEventsResponse
			err error
		}
		done := make(chan outcome, 1)
		// No input wait timeout: on SQLite each attempt waits out the busy timeout (10s).
		input := &api.Input{Log: h.log, Topic: "in", Wait: h.rs.API()}
		go func() {
			res, err := input.InputRoomEvents(ctx, &api.InputRoomEventsRequest{Input: api.InputRoomEvents{RoomID: roomID,
				Events: []api.InputRoomEvent{roomtest.Proto(alice, "m.room.message", nil, map[string]string{"body": "while down"})}}})
			done <- outcome{res, err}
		}()
		deadline := time.Now().Add(3 * time.Minute)
		for h.counter("dendrite_eventlog_consumer_failures_total") <= 5 {
			if time.Now().After(deadline) {
				restore()
				t.Fatal("the record was not retried past MaxAttempts")
			}
			select {
			case o := <-done:
				restore()
				t.Fatalf("the writer got an answer while the database was down: %+v %v", o.res, o.err)
			case <-time.After(50 * time.Millisecond):
			}
		}
		restore()
		o := <-done
		if o.err != nil || len(o.res.Results) != 1 || o.res.Results[0].Err != nil || o.res.Results[0].EventID == "" {
			t.Fatalf("the message once the database is back: %+v %v", o.res, o.err)
		}
		if v := h.counter("dendrite_eventlog_dead_letters_total"); v != 0 {
			t.Fatalf("%v dead letters counted, want none", v)
		}
		if causes := deadLetters(t, db); len(causes) != 0 {
			t.Fatalf("dead letters: %q", causes)
		}
	})
}

// takeDown makes db unavailable to the roomserver until the returned function is called:
// on PostgreSQL the database stops accepting connections and its open ones are ended; on
// SQLite another connection holds the write lock (the roomserver's writes fail with
// SQLITE_BUSY after its busy timeout).
func takeDown(t *testing.T, db *sqlutil.DB) func() {
	t.Helper()
	ctx := context.Background()
	if db.Engine() == sqlutil.SQLite {
		var seq int
		var name, path string
		if err := db.QueryRowContext(ctx, "PRAGMA database_list").Scan(&seq, &name, &path); err != nil {
			t.Fatal(err)
		}
		holder, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)&_txlock=immediate")
		if err != nil {
			t.Fatal(err)
		}
		tx, err := holder.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err = tx.ExecContext(ctx, "UPDATE roomserver_rooms SET room_id = room_id"); err != nil {
			t.Fatal(err)
		}
		return func() {
			_ = tx.Rollback() // the lock is released either way
			_ = holder.Close()
		}
	}
	var name string
	if err := db.QueryRowContext(ctx, "SELECT current_database()").Scan(&name); err != nil {
		t.Fatal(err)
	}
	admin, err := sqlutil.Open(test.PostgresDSN(t))
	if err != nil {
		t.Fatal(err)
	}
	exec := func(q string) {
		if _, err := admin.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	exec(fmt.Sprintf(`ALTER DATABASE %q ALLOW_CONNECTIONS false`, name))
	exec(fmt.Sprintf(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '%s' AND pid <> pg_backend_pid()`, name))
	return func() {
		exec(fmt.Sprintf(`ALTER DATABASE %q ALLOW_CONNECTIONS true`, name))
		if err := admin.Close(); err != nil && !errors.Is(err, sql.ErrConnDone) {
			t.Error(err)
		}
	}
}
