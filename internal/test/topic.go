package test

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/sqlutil"
)

// EmbeddedLog is a fresh embedded event log in its own SQLite file, closed at the end of
// the test.
func EmbeddedLog(t *testing.T, partitions int32) eventlog.Log {
	t.Helper()
	db, err := sqlutil.Open("file:" + filepath.Join(t.TempDir(), "eventlog.db"))
	if err != nil {
		t.Fatal(err)
	}
	l, err := eventlog.NewEmbedded(context.Background(), db, eventlog.Config{DefaultPartitions: partitions})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = l.Close()  // nothing to do about a failed close in cleanup
		_ = db.Close() // likewise
	})
	return l
}

// Follow collects every record appended to topic from now on, across its partitions, until
// the test ends.
type Follow struct {
	mu   sync.Mutex
	recs []eventlog.Record
}

// FollowTopic starts following topic from its current end.
func FollowTopic(t *testing.T, log eventlog.Log, topic string) *Follow {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ends, err := log.EndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	f := &Follow{}
	for p, end := range ends {
		go func() {
			_ = log.Consume(ctx, topic, int32(p), end, func(_ context.Context, recs []eventlog.Record) error { // ends with the test
				f.mu.Lock()
				f.recs = append(f.recs, recs...)
				f.mu.Unlock()
				return nil
			})
		}()
	}
	return f
}

// Wait returns the records once at least n have arrived, failing the test after timeout.
func (f *Follow) Wait(t *testing.T, n int, timeout time.Duration) []eventlog.Record {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		f.mu.Lock()
		got := append([]eventlog.Record(nil), f.recs...)
		f.mu.Unlock()
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d records within %s, want %d", len(got), timeout, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
