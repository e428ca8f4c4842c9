package pushserver_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/internal/test/roomtest"
	"github.com/matrix-org/dendrite/pushserver"
	"github.com/matrix-org/dendrite/pushserver/storage"
	pushsql "github.com/matrix-org/dendrite/pushserver/storage/sql"
	rsapi "github.com/matrix-org/dendrite/roomserver/api"
)

// benchMembers is the room size of BenchmarkPushReader.
const benchMembers = 1000

// BenchmarkPushReader measures the events per second the push reader sustains in a room
// of 1,000 local members with the default rules: b.N messages are written to
// OutputRoomEvent first, then the push server consumes them, evaluating each for 999
// members (the sender excepted) and recording a notification for each. The room's state
// is seeded in the push server's storage, as the reader would have stored it.
func BenchmarkPushReader(b *testing.B) {
	b.Run("sqlite", func(b *testing.B) {
		benchPushReader(b, func() string { return "file:" + filepath.Join(b.TempDir(), "push.db") })
	})
	b.Run("postgres", func(b *testing.B) {
		benchPushReader(b, func() string { return test.PostgresDSN(b) })
	})
}

func benchPushReader(b *testing.B, dsn func() string) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	db, err := sqlutil.Open(dsn())
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close() // nolint: errcheck // benchmark teardown
	logDB, err := sqlutil.Open("file:" + filepath.Join(b.TempDir(), "log.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer logDB.Close() // nolint: errcheck // benchmark teardown
	log, err := eventlog.NewEmbedded(ctx, logDB, eventlog.Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer log.Close() // nolint: errcheck // benchmark teardown
	const server = "bench.test"
	roomID := fmt.Sprintf("!bench%d:%s", time.Now().UnixNano(), server)
	store, err := pushsql.Open(ctx, db)
	if err != nil {
		b.Fatal(err)
	}
	members := make([]storage.Member, 0, benchMembers)
	for i := range benchMembers {
		members = append(members, storage.Member{UserID: fmt.Sprintf("@u%d:%s", i, server), Membership: "join", DisplayName: fmt.Sprintf("User %d", i)})
	}
	if err = db.WithTx(ctx, func(tx *sql.Tx) error {
		return store.AddRoom(ctx, tx, roomID, members, json.RawMessage(`{"users":{"@u0:bench.test":100}}`))
	}); err != nil {
		b.Fatal(err)
	}
	remote := &roomtest.Remote{T: b, Key: roomtest.NewKey(b), Origin: server, Version: "10", RoomID: roomID}
	msgs := make([]eventlog.Message, 0, b.N)
	for i := range b.N {
		ev := remote.Event("@u0:"+server, "m.room.message", nil, map[string]string{"msgtype": "m.text", "body": fmt.Sprintf("message %d", i)},
			int64(i+10), nil, nil)
		value, err := json.Marshal(rsapi.OutputRoomEvent{Type: rsapi.OutputTypeNewRoomEvent,
			NewRoomEvent: &rsapi.OutputNewRoomEvent{Event: rsapi.Event{PDU: ev}}})
		if err != nil {
			b.Fatal(err)
		}
		msgs = append(msgs, eventlog.Message{Key: []byte(roomID), Value: value})
	}
	topics := pushserver.Topics{RoomEvents: "out", ClientData: "clientdata", Receipts: "receipts", KeyChanges: "keys", Notifications: "counts"}
	if _, err = log.Produce(ctx, topics.RoomEvents, msgs...); err != nil {
		b.Fatal(err)
	}
	logger := logrus.New()
	logger.SetOutput(io.Discard)
	s, err := pushserver.New(ctx, pushserver.Deps{Cfg: &config.PushServer{}, ServerName: server, DB: db, Log: log, Topics: topics,
		Logger: logrus.NewEntry(logger)})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	want := b.N * (benchMembers - 1)
	for {
		var n int
		if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM pushserver_notifications WHERE room_id = $1", roomID).Scan(&n); err != nil {
			b.Fatal(err)
		}
		if n == want {
			break
		}
		if n > want {
			b.Fatalf("%d notifications for %d events", n, b.N)
		}
		time.Sleep(20 * time.Millisecond)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
	b.ReportMetric(float64(want)/elapsed.Seconds(), "evaluations/s")
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}
