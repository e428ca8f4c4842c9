package pushserver_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/outbound"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/internal/test/roomtest"
	"github.com/matrix-org/dendrite/pushserver"
	"github.com/matrix-org/dendrite/pushserver/api"
	"github.com/matrix-org/dendrite/pushserver/storage"
	pushsql "github.com/matrix-org/dendrite/pushserver/storage/sql"
	"github.com/matrix-org/dendrite/roomserver"
	rsapi "github.com/matrix-org/dendrite/roomserver/api"
)

// gauge sums the samples of the gauge name in reg whose label "consumer" is consumer
// (any consumer when empty); -1 when reg has no such metric.
func gauge(t *testing.T, reg *prometheus.Registry, name, consumer string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum, found := 0.0, false
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			match := consumer == ""
			for _, l := range m.GetLabel() {
				if l.GetName() == "consumer" && l.GetValue() == consumer {
					match = true
				}
			}
			if match {
				sum += m.GetGauge().GetValue()
				found = true
			}
		}
	}
	if !found {
		return -1
	}
	return sum
}

// TestBacklogMetrics: the push server's metrics show work it has not done yet, which a
// benchmark's idle check reads since a CPU sample cannot tell a loaded machine from an
// idle server: room events in the log it has not evaluated (consumer lag), then the
// pushes queued for a gateway that holds them (due pushes), and 0 for both once the
// gateway answers.
func TestBacklogMetrics(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		logDB, err := sqlutil.Open("file:" + filepath.Join(t.TempDir(), "log.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = logDB.Close() }) // nothing to do about a failed close in cleanup
		log, err := eventlog.NewEmbedded(ctx, logDB, eventlog.Config{DefaultPartitions: 2})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = log.Close() }) // as above
		const server = "backlog.test"
		_, key, _ := ed25519.GenerateKey(rand.Reader) // crypto/rand never fails on Linux
		logger := logrus.New()
		logger.SetOutput(io.Discard)
		rs, err := roomserver.New(ctx, roomserver.Deps{Cfg: &config.RoomServer{Shards: 1}, ServerName: server, KeyID: "ed25519:bench",
			PrivateKey: key, DB: db, Log: log, InputTopic: "in", OutputTopic: "out", Logger: logrus.NewEntry(logger)})
		if err != nil {
			t.Fatal(err)
		}
		rsDone := make(chan error, 1)
		go func() { rsDone <- rs.Run(ctx) }()
		defer func() { <-rsDone }()
		defer cancel()
		input := &rsapi.Input{Log: log, Topic: "in", Wait: rs.API()}
		users := []string{"@u0:" + server, "@u1:" + server, "@u2:" + server}
		roomID := benchRoom(t, input, key, server, users)
		release := make(chan struct{})
		gw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-release:
			case <-r.Context().Done():
				return
			}
			_, _ = io.WriteString(w, `{"rejected":[]}`) // the deliverer's problem if the write fails
		}))
		defer gw.Close()
		store, err := pushsql.Open(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range users {
			p := &storage.StoredPusher{UserID: u, DeviceID: "D", CreatedTS: time.Now().UnixMilli(), Pusher: api.Pusher{PushKey: "key-" + u,
				Kind: api.PusherKindHTTP, AppID: "backlog", Lang: "en", Data: json.RawMessage(`{"url":"` + gw.URL + api.NotifyPath + `"}`)}}
			if err := store.UpsertPusher(ctx, p, true); err != nil {
				t.Fatal(err)
			}
		}
		deny, err := outbound.NewPolicy([]string{})
		if err != nil {
			t.Fatal(err)
		}
		reg := prometheus.NewRegistry()
		topics := pushserver.Topics{RoomEvents: "out", ClientData: "clientdata", Receipts: "receipts", KeyChanges: "keys", Notifications: "counts"}
		s, err := pushserver.New(ctx, pushserver.Deps{Cfg: &config.PushServer{}, ServerName: server, DB: db, Log: log, Topics: topics,
			Rooms: rs.API(), Deny: deny, Logger: logrus.NewEntry(logger), Registerer: reg})
		if err != nil {
			t.Fatal(err)
		}
		if n := gauge(t, reg, "dendrite_pushserver_consumer_lag_records", "room_events"); n < 1 {
			t.Fatalf("before the reader runs: room events lag %v, want the room's events", n)
		}
		if n := gauge(t, reg, "dendrite_pushserver_pushes_due", ""); n != 0 {
			t.Fatalf("before the reader runs: %v pushes due, want 0", n)
		}
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx) }()
		defer func() {
			cancel()
			if err := <-done; err != nil {
				t.Error(err)
			}
		}()
		// wait polls until the room events lag and the due pushes are as wanted.
		wait := func(lag, due float64) {
			t.Helper()
			var gotLag, gotDue float64
			for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
				gotLag = gauge(t, reg, "dendrite_pushserver_consumer_lag_records", "")
				gotDue = gauge(t, reg, "dendrite_pushserver_pushes_due", "")
				if gotLag == lag && gotDue == due {
					return
				}
			}
			t.Fatalf("lag %v and %v pushes due, want %v and %v", gotLag, gotDue, lag, due)
		}
		wait(0, 0)
		waitJoined(t, db, roomID, len(users))
		// Two messages, two members each to push to; the gateway holds every push.
		for range 2 {
			benchSubmit(t, input, roomID, roomtest.Proto(users[0], "m.room.message", nil, map[string]string{"msgtype": "m.text", "body": "hi"}))
		}
		wait(0, 4)
		close(release)
		wait(0, 0)
	})
}
