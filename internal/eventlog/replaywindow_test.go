package eventlog_test

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
)

// windowOwner is an owner that pruned its records up to pruned (its replay window) and
// whose first Fetch waits for release, so that a test can look at a recovering consumer.
type windowOwner struct {
	owner
	pruned  int64
	fetched chan struct{}
	release chan struct{}
	once    sync.Once
}

func (o *windowOwner) sequenced() *eventlog.Sequenced {
	s := o.owner.sequenced()
	fetch := s.Fetch
	s.Fetch = func(ctx context.Context, partition int32, after int64) ([][]byte, error) {
		var cancelled error
		o.once.Do(func() {
			close(o.fetched)
			select {
			case <-o.release:
			case <-ctx.Done():
				cancelled = ctx.Err()
			}
		})
		if cancelled != nil {
			return nil, cancelled
		}
		if after < o.pruned {
			return nil, &eventlog.ReplayGoneError{Oldest: o.pruned + 1}
		}
		return fetch(ctx, partition, after)
	}
	return s
}

// openLog opens an embedded log with one partition per topic on the database file path.
func openLog(ctx context.Context, t *testing.T, path string) *eventlog.Embedded {
	t.Helper()
	logDB, err := sqlutil.Open("file:" + path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = logDB.Close() }) // the test's own database file
	l, err := eventlog.NewEmbedded(ctx, logDB, eventlog.Config{DefaultPartitions: 1, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() }) // Close never fails
	return l
}

// TestSequencedConsumerBeyondReplayWindow wipes the log under a Sequenced consumer (its
// offsets on both engines) that applied records 1-2, when records 3-5 were lost with the
// log and the owner keeps only records from 5 on (3 and 4 are older than its replay
// window). While the Guard recovers, Ready reports ErrRecovering. The consumer must not
// retry the owner's refusal forever: it goes on from record 5, the oldest kept, counts the
// two lost records, reports ready again, and applies the new log's records.
func TestSequencedConsumerBeyondReplayWindow(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		offsets, err := eventlog.NewOffsetStore(ctx, db, "seq")
		if err != nil {
			t.Fatal(err)
		}
		o := &windowOwner{fetched: make(chan struct{}), release: make(chan struct{})}
		got := &applied{}
		reg := prometheus.NewRegistry()
		metrics := eventlog.NewMetrics(reg)
		run := func(l eventlog.Log) (stop func()) {
			c := &eventlog.Consumer{Log: l, DB: db, Offsets: offsets, Topic: "out", Partitions: []int32{0}, Logger: quietLogger(),
				Handle: got.handle, Sequenced: o.sequenced(), Metrics: metrics}
			cctx, cancel := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- c.Run(cctx) }()
			return func() {
				cancel()
				if err := <-done; err != nil {
					t.Fatal(err)
				}
			}
		}
		old := openLog(ctx, t, filepath.Join(t.TempDir(), "old.db"))
		for range 2 {
			if _, err := old.Produce(ctx, "out", eventlog.Message{Value: o.next()}); err != nil {
				t.Fatal(err)
			}
		}
		stop := run(old)
		got.waitForSeqs(ctx, t, 1, 2)
		waitStoredSeq(ctx, t, offsets, 2)
		stop()
		for range 3 {
			o.next() // 3-5, lost with the log
		}
		o.pruned = 4

		wiped := openLog(ctx, t, filepath.Join(t.TempDir(), "new.db"))
		if _, err := wiped.Produce(ctx, "out", eventlog.Message{Value: o.next()}); err != nil { // 6
			t.Fatal(err)
		}
		stop = run(wiped)
		defer stop()
		select {
		case <-o.fetched:
		case <-ctx.Done():
			t.Fatal("the guard never asked the owner")
		}
		if err := wiped.Ready(ctx); !errors.Is(err, eventlog.ErrRecovering) {
			t.Fatalf("Ready while recovering: %v, want ErrRecovering", err)
		}
		close(o.release)
		got.waitForSeqs(ctx, t, 1, 2, 5, 6)
		for err := wiped.Ready(ctx); err != nil; err = wiped.Ready(ctx) {
			if ctx.Err() != nil {
				t.Fatalf("Ready after the recovery: %v", err)
			}
			time.Sleep(10 * time.Millisecond) // polling with the test's deadline
		}
		if lost := counterValue(t, reg, "dendrite_eventlog_replay_lost_records_total"); lost != 2 {
			t.Fatalf("%v records counted lost, want 2", lost)
		}
		if _, err := wiped.Produce(ctx, "out", eventlog.Message{Value: o.next()}); err != nil { // 7
			t.Fatal(err)
		}
		got.waitForSeqs(ctx, t, 1, 2, 5, 6, 7)
	})
}

// TestGuardRestartsTruncatedLog truncates the embedded log under a guarded consumer that
// read records a, b and c: the log comes back as an older copy of itself (same
// incarnation) that ends after a, and d is written at offset 1 before the consumer starts
// again. The consumer cannot tell which records below its offset are new to it, so it must
// not resume at the log's end (that skips d) nor wait at its offset: it reads the log from
// its start again (a again: handlers are idempotent), then d and the marker e.
func TestGuardRestartsTruncatedLog(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := t.TempDir()
	db, err := sqlutil.Open("file:" + filepath.Join(dir, "consumer.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() }) // the test's own database file
	offsets, err := eventlog.NewOffsetStore(ctx, db, "trunc")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var bodies []string
	handle := func(_ context.Context, _ *sql.Tx, recs []eventlog.Record) error {
		mu.Lock()
		defer mu.Unlock()
		for _, r := range recs {
			bodies = append(bodies, string(r.Value))
		}
		return nil
	}
	waitBodies := func(want ...string) {
		t.Helper()
		for {
			mu.Lock()
			got := slices.Clone(bodies)
			mu.Unlock()
			if slices.Equal(got, want) {
				return
			}
			if len(got) > len(want) || ctx.Err() != nil {
				t.Fatalf("applied %q, want %q", got, want)
			}
			time.Sleep(10 * time.Millisecond) // polling with the test's deadline
		}
	}
	run := func(l eventlog.Log) (stop func()) {
		c := &eventlog.Consumer{Log: l, DB: db, Offsets: offsets, Topic: "out", Partitions: []int32{0}, Logger: quietLogger(),
			Handle: handle, Guarded: true}
		cctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- c.Run(cctx) }()
		return func() {
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		}
	}
	path := filepath.Join(dir, "log.db")
	logDB, err := sqlutil.Open("file:" + path)
	if err != nil {
		t.Fatal(err)
	}
	l, err := eventlog.NewEmbedded(ctx, logDB, eventlog.Config{DefaultPartitions: 1, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{"a", "b", "c"} {
		if _, err := l.Produce(ctx, "out", eventlog.Message{Value: []byte(b)}); err != nil {
			t.Fatal(err)
		}
	}
	inc, err := l.Incarnation(ctx, "out", 0)
	if err != nil {
		t.Fatal(err)
	}
	stop := run(l)
	waitBodies("a", "b", "c")
	for st, err := offsets.Position(ctx, "out", 0); st.Next != 3 || st.Incarnation != inc; st, err = offsets.Position(ctx, "out", 0) {
		if err != nil || ctx.Err() != nil {
			t.Fatalf("stored %+v, %v; want next offset 3 in %q", st, err, inc)
		}
		time.Sleep(10 * time.Millisecond) // polling with the test's deadline
	}
	stop()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	// The older copy: the records after a are gone, the partition's identity is the same.
	if _, err := logDB.ExecContext(ctx, "DELETE FROM eventlog_records WHERE record_offset > 0"); err != nil {
		t.Fatal(err)
	}
	if _, err := logDB.ExecContext(ctx, "UPDATE eventlog_ends SET next_offset = 1"); err != nil {
		t.Fatal(err)
	}
	if err := logDB.Close(); err != nil {
		t.Fatal(err)
	}
	restored := openLog(ctx, t, path)
	if got, err := restored.Incarnation(ctx, "out", 0); err != nil || got != inc {
		t.Fatalf("restored incarnation %q, %v; want %q", got, err, inc)
	}
	if _, err := restored.Produce(ctx, "out", eventlog.Message{Value: []byte("d")}); err != nil {
		t.Fatal(err)
	}
	stop = run(restored)
	defer stop()
	waitBodies("a", "b", "c", "a", "d")
	if _, err := restored.Produce(ctx, "out", eventlog.Message{Value: []byte("e")}); err != nil {
		t.Fatal(err)
	}
	waitBodies("a", "b", "c", "a", "d", "e")
}

// waitForSeqs polls until the consumer applied exactly want, in order.
func (a *applied) waitForSeqs(ctx context.Context, t *testing.T, want ...int64) {
	t.Helper()
	for {
		a.mu.Lock()
		got := slices.Clone(a.seqs)
		a.mu.Unlock()
		if slices.Equal(got, want) {
			return
		}
		if len(got) > len(want) || ctx.Err() != nil {
			t.Fatalf("applied %v, want %v exactly once in order", got, want)
		}
		time.Sleep(10 * time.Millisecond) // polling with the test's deadline
	}
}

// waitStoredSeq polls until the consumer's stored sequence number is seq.
func waitStoredSeq(ctx context.Context, t *testing.T, offsets *eventlog.OffsetStore, seq int64) {
	t.Helper()
	for st, err := offsets.Position(ctx, "out", 0); st.Seq != seq; st, err = offsets.Position(ctx, "out", 0) {
		if err != nil || ctx.Err() != nil {
			t.Fatalf("stored %+v, %v; want seq %d", st, err, seq)
		}
		time.Sleep(10 * time.Millisecond) // polling with the test's deadline
	}
}

// counterValue sums the counter name over its labels in reg.
func counterValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, f := range families {
		if f.GetName() == name {
			for _, m := range f.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}
