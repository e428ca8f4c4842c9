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
	log   eventlog.Log
	topic string

	mu   sync.Mutex
	recs []eventlog.Record
	// next is, per partition, the offset after the last record collected.
	next map[int32]int64
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
	f := &Follow{log: log, topic: topic, next: map[int32]int64{}}
	for p, end := range ends {
		f.next[int32(p)] = end
		go func() {
			_ = log.Consume(ctx, topic, int32(p), end, func(_ context.Context, recs []eventlog.Record) error { // ends with the test
				f.mu.Lock()
				f.recs = append(f.recs, recs...)
				f.next[int32(p)] = recs[len(recs)-1].Offset + 1
				f.mu.Unlock()
				return nil
			})
		}()
	}
	return f
}

// Until returns the records once one of them satisfies match, failing the test after
// timeout. Used with Settled it fences a check that something did NOT arrive: produce a
// marker after it, wait here for the marker, then look at Settled.
func (f *Follow) Until(t *testing.T, timeout time.Duration, match func(eventlog.Record) bool) []eventlog.Record {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		f.mu.Lock()
		got := append([]eventlog.Record(nil), f.recs...)
		f.mu.Unlock()
		for _, rec := range got {
			if match(rec) {
				return got
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no matching record on %s within %s (%d records)", f.topic, timeout, len(got))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Settled returns every record appended to the topic before the call: it waits until the
// follower has read every partition up to its end at the call, failing the test after
// timeout. Once a writer has finished (its call returned, or a marker it wrote after its
// other records was seen), Settled holds everything it wrote, so what is missing was never
// written.
func (f *Follow) Settled(t *testing.T, timeout time.Duration) []eventlog.Record {
	t.Helper()
	ends, err := f.log.EndOffsets(context.Background(), f.topic)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(timeout)
	for {
		f.mu.Lock()
		behind := 0
		for p, end := range ends {
			if f.next[int32(p)] < end {
				behind++
			}
		}
		got := append([]eventlog.Record(nil), f.recs...)
		f.mu.Unlock()
		if behind == 0 {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d partitions of %s not read to their end within %s", behind, f.topic, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
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
