package internal

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/pushrules"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/internal/test/roomtest"
	"github.com/matrix-org/dendrite/pushserver/storage"
	pushsql "github.com/matrix-org/dendrite/pushserver/storage/sql"
	rsapi "github.com/matrix-org/dendrite/roomserver/api"
)

// TestReaderTransactionsBounded: 20 messages to a room whose joined members are 6% of
// what one of the reader's transactions takes (maxTxNotifications) are more than one
// transaction: Prepare takes the first 16 records (96% of the bound in members to
// notify) and leaves the others, which the next Prepare takes whole; applied one after
// the other, the two steps record each member's notification of each message once. (The
// whole batch was one transaction.)
func TestReaderTransactionsBounded(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		store, err := pushsql.Open(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		const server = "bound.test"
		roomID := "!bound:" + server
		var members []storage.Member
		size := maxTxNotifications * 6 / 100
		for i := range size {
			members = append(members, storage.Member{UserID: fmt.Sprintf("@u%d:%s", i, server), Membership: "join"})
		}
		if err = db.WithTx(ctx, func(tx *sql.Tx) error { return store.AddRoom(ctx, tx, roomID, members, nil) }); err != nil {
			t.Fatal(err)
		}
		logDB, err := sqlutil.Open("file:" + filepath.Join(t.TempDir(), "log.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = logDB.Close() }) // nothing to do about a failed close in cleanup
		log, err := eventlog.NewEmbedded(ctx, logDB, eventlog.Config{DefaultPartitions: 1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = log.Close() }) // as above
		remote := &roomtest.Remote{T: t, Key: roomtest.NewKey(t), Origin: server, Version: "10", RoomID: roomID}
		var recs []eventlog.Record
		for i := range 20 {
			ev := remote.Event(members[0].UserID, "m.room.message", nil, map[string]string{"msgtype": "m.text", "body": "hi"}, int64(10+i), nil, nil)
			value, err := json.Marshal(rsapi.OutputRoomEvent{Type: rsapi.OutputTypeNewRoomEvent, NewRoomEvent: &rsapi.OutputNewRoomEvent{Event: rsapi.Event{PDU: ev}}})
			if err != nil {
				t.Fatal(err)
			}
			recs = append(recs, eventlog.Record{Topic: "out", Offset: int64(i), Value: value})
		}
		logger := logrus.New()
		logger.SetOutput(io.Discard)
		r := &Reader{DB: store, ServerName: server, Evaluator: pushrules.NewEvaluator(1<<20, nil), Rules: NewRuleCache(1<<20, nil),
			ClientData: eventlog.NewProgress(log, "clientdata"), Logger: logrus.NewEntry(logger)}
		step, err := r.Prepare(ctx, recs)
		if err != nil {
			t.Fatal(err)
		}
		if step.Take != 16 {
			t.Fatalf("the first step takes %d of 20 records, want 16", step.Take)
		}
		if err = db.WithTx(ctx, func(tx *sql.Tx) error { return step.Apply(ctx, tx) }); err != nil {
			t.Fatal(err)
		}
		rest, err := r.Prepare(ctx, recs[16:])
		if err != nil {
			t.Fatal(err)
		}
		if rest.Take != 4 {
			t.Fatalf("the second step takes %d of 4 records, want 4", rest.Take)
		}
		if err = db.WithTx(ctx, func(tx *sql.Tx) error { return rest.Apply(ctx, tx) }); err != nil {
			t.Fatal(err)
		}
		var n, distinct int
		if err = db.QueryRowContext(ctx, `SELECT COUNT(*), COUNT(DISTINCT n.pos) FROM pushserver_notifications n
			JOIN pushserver_nids r ON r.nid = n.room_nid WHERE r.id = $1`, roomID).
			Scan(&n, &distinct); err != nil {
			t.Fatal(err)
		}
		if n != 20*(size-1) || distinct != 20 {
			t.Fatalf("%d notifications of %d events, want %d of 20", n, distinct, 20*(size-1))
		}
	})
}
