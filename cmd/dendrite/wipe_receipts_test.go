package main

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test/e2e"
)

// TestMonolithReceiptSurvivesWipedLog: a read receipt the receiptserver took (the move and
// its numbered record committed to its outbox, and produced), which neither the sync API nor
// the federation sender had applied yet (their databases held locked), survives the loss of
// the log. Server A is killed, every record of its embedded log deleted, and it starts
// again: the readers' guards catch up from the receiptserver's QueryOutputRecords, so the
// receipt reaches /sync of carol (a room-mate on A) and of bob (on server B), exactly once
// each (a marker receipt sent after the restart shows nothing else comes). Both engines.
func TestMonolithReceiptSurvivesWipedLog(t *testing.T) {
	onEachEngine(t, func(t *testing.T, newDSN func() string) {
		dsnA := newDSN()
		receiptSurvivesWipedLog(t, startFedServerWith(t, dsnA, ""), startFedServerWith(t, newDSN(), ""), dsnA)
	})
}

func receiptSurvivesWipedLog(t *testing.T, a, b *fedServer, dsnA string) {
	ctx, cancel := context.WithTimeout(context.Background(), 240*time.Second)
	defer cancel()
	const wait = 90 * time.Second // includes a federation sender's backoff
	alice, carol := e2e.Register(t, a.URL(), "wipedreceipt"), e2e.Register(t, a.URL(), "wipedreceiptcarol")
	bob := e2e.Register(t, b.URL(), "wipedreceiptbob")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err = carol.JoinRoomByID(ctx, room.RoomID); err != nil {
		t.Fatal(err)
	}
	if _, err = bob.JoinRoom(ctx, room.RoomID.String(), &mautrix.ReqJoinRoom{Via: []string{string(a.name)}}); err != nil {
		t.Fatal(err)
	}
	cp, bp := &e2e.Poller{C: carol}, &e2e.Poller{C: bob}
	counts := map[*e2e.Poller]map[id.EventID]int{cp: {}, bp: {}}
	receipted := func(p *e2e.Poller, eventID id.EventID) func(*mautrix.RespSync) bool {
		return func(res *mautrix.RespSync) bool {
			for _, r := range e2e.ReceiptsIn(res, room.RoomID) {
				if r[1] == string(event.ReceiptTypeRead) && r[2] == alice.UserID.String() {
					counts[p][id.EventID(r[0])]++
				}
			}
			return counts[p][eventID] > 0
		}
	}
	sendAndRead := func(body string, read bool) id.EventID {
		t.Helper()
		sent, err := alice.SendText(ctx, room.RoomID, body)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range []*e2e.Poller{cp, bp} {
			p.Until(t, wait, body, func(res *mautrix.RespSync) bool {
				r := res.Rooms.Join[room.RoomID]
				return r != nil && len(r.Timeline.Events) > 0 && r.Timeline.Events[len(r.Timeline.Events)-1].ID == sent.EventID
			})
		}
		if read {
			if err = alice.SendReceipt(ctx, room.RoomID, sent.EventID, event.ReceiptTypeRead, nil); err != nil {
				t.Fatal(err)
			}
		}
		return sent.EventID
	}
	// A first receipt both readers apply: their offsets in the room's partition are then
	// past 0, so the deleted log is one they had read.
	first := sendAndRead("first", true)
	cp.Until(t, wait, "the first receipt at A", receipted(cp, first))
	bp.Until(t, wait, "the first receipt at B", receipted(bp, first))

	second := sendAndRead("second", false)
	unlock := lockReaders(ctx, t, a.dataDir, dsnA)
	if err = alice.SendReceipt(ctx, room.RoomID, second, event.ReceiptTypeRead, nil); err != nil {
		t.Fatal(err)
	}
	// Produced and marked so: the restarted receiptserver does not produce it again, and
	// only its outbox still holds it once the log is deleted.
	waitProduced(ctx, t, a.dataDir, dsnA, "receiptserver", string(second))
	if err = a.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = a.cmd.Wait() // killed: the exit status says so
	unlock()
	deleteLog(ctx, t, a.dataDir)
	a.start(t)

	cp.Until(t, wait, "the receipt after the wipe at A", receipted(cp, second))
	bp.Until(t, wait, "the receipt after the wipe at B", receipted(bp, second))
	marker := sendAndRead("marker", true)
	cp.Until(t, wait, "the marker receipt at A", receipted(cp, marker))
	bp.Until(t, wait, "the marker receipt at B", receipted(bp, marker))
	for p, who := range map[*e2e.Poller]string{cp: "carol at A", bp: "bob at B"} {
		if n := counts[p][second]; n != 1 {
			t.Errorf("%s saw alice's receipt after the wipe %d times, want once", who, n)
		}
	}
}

// lockReaders holds the databases of server A's sync API and federation sender locked until
// the returned function is called, so that neither applies anything meanwhile.
func lockReaders(ctx context.Context, t *testing.T, dataDir, dsn string) func() {
	t.Helper()
	return lockComponents(ctx, t, dataDir, dsn, "syncapi", "federationsender")
}

// lockComponents holds the databases of the components of the server with data directory
// dataDir locked against their consumers (SQLite: each component's file; PostgreSQL: their
// offset tables, which every batch a consumer applies writes, in one transaction) until the
// returned function is called: nothing they consume is applied meanwhile, while their
// databases still answer reads.
func lockComponents(ctx context.Context, t *testing.T, dataDir, dsn string, components ...string) func() {
	t.Helper()
	var conns []*sql.Conn
	var dbs []*sqlutil.DB
	lock := func(source, begin string) {
		db, err := sqlutil.Open(source)
		if err != nil {
			t.Fatal(err)
		}
		conn, err := db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err = conn.ExecContext(ctx, begin); err != nil {
			t.Fatal(err)
		}
		dbs, conns = append(dbs, db), append(conns, conn)
	}
	if dsn != "" {
		lock(dsn, "BEGIN")
		tables := make([]string, len(components))
		for i, c := range components {
			tables[i] = c + "_log_offsets"
		}
		if _, err := conns[0].ExecContext(ctx, "LOCK TABLE "+strings.Join(tables, ", ")+" IN ACCESS EXCLUSIVE MODE"); err != nil {
			t.Fatal(err)
		}
	} else {
		for _, c := range components {
			lock(dbSource(dataDir, "", c), "BEGIN IMMEDIATE")
		}
	}
	return func() {
		var errs []error
		for i, c := range conns {
			_, err := c.ExecContext(ctx, "ROLLBACK")
			errs = append(errs, err, c.Close(), dbs[i].Close())
		}
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
	}
}

// dbSource is the data source of component's database on a server with data directory
// dataDir: dsn (PostgreSQL) when set, else the component's SQLite file.
func dbSource(dataDir, dsn, component string) string {
	if dsn != "" {
		return dsn
	}
	return "file:" + filepath.Join(dataDir, component+".db")
}

// produced reports whether component's outbox (eventlog.Outbox) holds a produced record
// whose payload contains every one of parts.
func produced(ctx context.Context, t *testing.T, dataDir, dsn, component string, parts ...string) bool {
	t.Helper()
	db, err := sqlutil.Open(dbSource(dataDir, dsn, component))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close() // nolint: errcheck // read only
	rows, err := db.QueryContext(ctx, "SELECT payload FROM "+component+"_outbox WHERE produced")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close() // nolint: errcheck // read only
	for rows.Next() {
		var payload []byte
		if err = rows.Scan(&payload); err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(parts, func(part string) bool { return !bytes.Contains(payload, []byte(part)) }) {
			return true
		}
	}
	if err = rows.Err(); err != nil {
		t.Fatal(err)
	}
	return false
}

// waitProduced polls component's outbox until it produced a record whose payload contains
// every one of parts: the record the test made, not another one (a count of produced
// records was also reached by records of other users, and the test's own record, not
// stored yet, was lost with the log).
func waitProduced(ctx context.Context, t *testing.T, dataDir, dsn, component string, parts ...string) {
	t.Helper()
	for ctx.Err() == nil {
		if produced(ctx, t, dataDir, dsn, component, parts...) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("the %s never produced a record with %q", component, parts)
}
