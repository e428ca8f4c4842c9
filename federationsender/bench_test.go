package federationsender_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
)

// BenchmarkSendPDUs measures PDUs/s from the federationsender to one destination: b.N
// events of our user in one room are produced to OutputRoomEvent at once, and the clock
// stops when the destination (over loopback TLS, checking every request's X-Matrix
// signature) has all of them.
func BenchmarkSendPDUs(b *testing.B) {
	for _, engine := range []string{"sqlite", "postgres"} {
		b.Run(engine, func(b *testing.B) {
			dsn := "file:" + filepath.Join(b.TempDir(), "fs.db")
			if engine == "postgres" {
				dsn = test.PostgresDSN(b)
			}
			db, err := sqlutil.Open(dsn)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = db.Close() })
			logDB, err := sqlutil.Open("file:" + filepath.Join(b.TempDir(), "log.db"))
			if err != nil {
				b.Fatal(err)
			}
			log, err := eventlog.NewEmbedded(context.Background(), logDB, eventlog.Config{DefaultPartitions: 4})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = log.Close(); _ = logDB.Close() })

			a, dest := newServer(b), newServer(b)
			roomID := "!bench:" + string(a.name)
			rs := &rooms{}
			rs.set(roomID, a.member(b, roomID, a.user("a"), spec.Join), dest.member(b, roomID, dest.user("b"), spec.Join))
			newSender(b, a, db, log, rs, testSenderConfig())
			// Warm up: the destination fetches A's key once.
			produceEvents(b, log, a.event(b, roomID, a.user("a"), "m.room.message", nil, map[string]any{"body": "warm-up"}))
			dest.waitPDUs(1, 10*time.Second)

			evs := make([]gomatrixserverlib.PDU, b.N)
			for i := range evs {
				evs[i] = a.event(b, roomID, a.user("a"), "m.room.message", nil, map[string]any{"body": i})
			}
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < len(evs); i += 500 {
				produceEvents(b, log, evs[i:min(i+500, len(evs))]...)
			}
			dest.waitPDUs(b.N+1, 5*time.Minute)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "pdus/s")
			dest.mu.Lock()
			b.ReportMetric(float64(b.N+1)/float64(len(dest.txnSizes)), "pdus/txn")
			dest.mu.Unlock()
		})
	}
}
