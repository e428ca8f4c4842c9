package eventlog_test

import (
	"context"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
)

// retentionReader is a Consume call that reports every offset it is handed and, until
// released, blocks in its first handle.
type retentionReader struct {
	seen    chan int64
	release chan struct{}
	done    chan error
	cancel  context.CancelFunc
}

func startReader(t *testing.T, l eventlog.Log, topic string, from int64, blocked bool) *retentionReader {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &retentionReader{seen: make(chan int64, 100), release: make(chan struct{}), done: make(chan error, 1), cancel: cancel}
	if !blocked {
		close(r.release)
	}
	go func() {
		r.done <- l.Consume(ctx, topic, 0, from, func(ctx context.Context, recs []eventlog.Record) error {
			for _, rec := range recs {
				r.seen <- rec.Offset
			}
			select {
			case <-r.release:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()
	t.Cleanup(r.stop)
	return r
}

// readThrough starts a reader of topic's partition 0 and returns once it has processed the
// first records records: it is handed a marker produced after them.
func readThrough(t *testing.T, l eventlog.Log, topic string, records int64) {
	t.Helper()
	r := startReader(t, l, topic, 0, false)
	r.waitFor(t, records-1)
	if _, err := l.Produce(context.Background(), topic, eventlog.Message{Key: []byte("k"), Value: []byte("marker")}); err != nil {
		t.Fatal(err)
	}
	r.waitFor(t, records)
}

func (r *retentionReader) stop() {
	if r.cancel != nil {
		r.cancel()
		<-r.done
		r.cancel = nil
	}
}

// waitFor waits until the reader was handed offset.
func (r *retentionReader) waitFor(t *testing.T, offset int64) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case o := <-r.seen:
			if o >= offset {
				return
			}
		case <-deadline:
			t.Fatalf("reader never got offset %d", offset)
		}
	}
}

// TestEmbeddedRetention: the embedded log deletes a record only once it is older than the
// retention and every reader of its partition has processed it; after a restart nothing is
// trimmed until every reader that ran before is back. (It used to delete by age alone, so a
// consumer behind by more than the retention lost records.)
func TestEmbeddedRetention(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		open := func() *eventlog.Embedded {
			l, err := eventlog.NewEmbedded(ctx, db, eventlog.Config{DefaultPartitions: 1, Retention: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			return l
		}
		produce := func(l eventlog.Log, n int) {
			for range n {
				if _, err := l.Produce(ctx, "ret", eventlog.Message{Key: []byte("k"), Value: []byte("v")}); err != nil {
					t.Fatal(err)
				}
			}
		}
		// age makes the records before offset older than the retention.
		age := func(before int64) {
			if _, err := db.ExecContext(ctx, "UPDATE eventlog_records SET created_ms = 0 WHERE topic = 'ret' AND record_offset < $1", before); err != nil {
				t.Fatal(err)
			}
		}
		kept := func(l *eventlog.Embedded, want ...int64) {
			t.Helper()
			if err := l.Trim(ctx); err != nil {
				t.Fatal(err)
			}
			rows, err := db.QueryContext(ctx, "SELECT record_offset FROM eventlog_records WHERE topic = 'ret' ORDER BY record_offset")
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			var got []int64
			for rows.Next() {
				var o int64
				if err := rows.Scan(&o); err != nil {
					t.Fatal(err)
				}
				got = append(got, o)
			}
			if !slices.Equal(got, want) {
				t.Fatalf("kept offsets %v, want %v", got, want)
			}
		}

		l := open()
		produce(l, 4)
		age(3)
		fast := startReader(t, l, "ret", 0, false)
		slow := startReader(t, l, "ret", 0, true)
		fast.waitFor(t, 3)
		slow.waitFor(t, 0) // blocked in its handle: it has processed nothing
		kept(l, 0, 1, 2, 3)
		close(slow.release)
		produce(l, 1) // a marker: once slow is handed it, slow has passed everything before
		slow.waitFor(t, 4)
		fast.waitFor(t, 4)
		kept(l, 3, 4) // 0-2 old and passed by both; 3 and 4 are new

		// Restart: the log remembers two readers; one alone does not allow trimming.
		slow.stop()
		fast.stop()
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		l = open()
		defer l.Close()
		age(5)
		fast = startReader(t, l, "ret", 5, false)
		produce(l, 1)
		fast.waitFor(t, 5)
		kept(l, 3, 4, 5)
		slow = startReader(t, l, "ret", 5, false)
		slow.waitFor(t, 5)
		kept(l, 5)
	})
}

// TestEmbeddedTrimGivesSpaceBack: on SQLite the pages of trimmed records go back to the file
// system (incremental vacuum), also for a log database created without it; the file shrinks
// instead of staying at its largest.
func TestEmbeddedTrimGivesSpaceBack(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "eventlog.db")
	db, err := sqlutil.Open("file:" + path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close() // nolint: errcheck // test database
	// A database that already holds a table, created without incremental vacuum.
	if _, err := db.ExecContext(ctx, "CREATE TABLE older (x INTEGER)"); err != nil {
		t.Fatal(err)
	}
	l, err := eventlog.NewEmbedded(ctx, db, eventlog.Config{DefaultPartitions: 1, Retention: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close() // nolint: errcheck // test log
	pages := func() int64 {
		var n int64
		if err := db.QueryRowContext(ctx, "PRAGMA page_count").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	value := make([]byte, 4096)
	const records = 500
	for range records {
		if _, err := l.Produce(ctx, "big", eventlog.Message{Key: []byte("k"), Value: value}); err != nil {
			t.Fatal(err)
		}
	}
	full := pages()
	readThrough(t, l, "big", records)
	if err := l.Trim(ctx); err != nil {
		t.Fatal(err)
	}
	if got := pages(); got > full/10 {
		t.Fatalf("the log holds %d pages after trimming, %d before: the space was not given back", got, full)
	}
}

// TestEmbeddedTrimsOnItsOwn: the log trims every quarter of its retention (at least every
// second, at most every minute), so a consumed record is gone about 1.25 retentions after
// it was written, without anyone calling Trim. (It trimmed once a minute whatever the
// retention: at the monolith's 600 messages a second, 1 minute's retention kept about two
// minutes of records.)
func TestEmbeddedTrimsOnItsOwn(t *testing.T) {
	ctx := context.Background()
	db, err := sqlutil.Open("file:" + filepath.Join(t.TempDir(), "eventlog.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close() // nolint: errcheck // test database
	l, err := eventlog.NewEmbedded(ctx, db, eventlog.Config{DefaultPartitions: 1, Retention: 4 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close() // nolint: errcheck // test log
	const records = 20
	for range records {
		if _, err := l.Produce(ctx, "t", eventlog.Message{Key: []byte("k"), Value: []byte("v")}); err != nil {
			t.Fatal(err)
		}
	}
	readThrough(t, l, "t", records)
	stored := func() int {
		var n int
		if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM eventlog_records").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	deadline := time.Now().Add(15 * time.Second)
	for stored() > 1 { // the marker may stay: its batch's end is what the reader reported last
		if time.Now().After(deadline) {
			t.Fatalf("%d records (%d consumed and a marker) still stored 15 s after they were written (retention 4 s)", stored(), records)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestEmbeddedTrimsInChunks: a trim deletes a partition's records a chunk of offsets per
// transaction (so that produces wait for one chunk, not the whole trim; 2,300 records take
// 9 chunks of 256, after one query for the oldest offset), and across the chunks it deletes
// exactly what one transaction did: every record older than the retention below the
// readers' offset, up to the first younger one.
func TestEmbeddedTrimsInChunks(t *testing.T) {
	withCountingDatabases(t, func(t *testing.T, counted *countingDB) {
		ctx := context.Background()
		db := counted.DB
		l, err := eventlog.NewEmbedded(ctx, db, eventlog.Config{DefaultPartitions: 1, Retention: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close() // nolint: errcheck // test log
		// More than two chunks of records, the first old ones older than the retention.
		const records, old = 2600, 2300
		msgs := make([]eventlog.Message, records)
		for i := range msgs {
			msgs[i] = eventlog.Message{Key: []byte("k"), Value: []byte("v")}
		}
		if _, err := l.Produce(ctx, "chunks", msgs...); err != nil {
			t.Fatal(err)
		}
		readThrough(t, l, "chunks", records)
		if _, err := db.ExecContext(ctx, "UPDATE eventlog_records SET created_ms = 0 WHERE topic = 'chunks' AND record_offset < $1", old); err != nil {
			t.Fatal(err)
		}
		deletes, mins := counted.Count("DELETE", "eventlog_records"), counted.Count("SELECT MIN(record_offset)", "eventlog_records")
		if err := l.Trim(ctx); err != nil {
			t.Fatal(err)
		}
		if d, m := counted.Count("DELETE", "eventlog_records")-deletes, counted.Count("SELECT MIN(record_offset)", "eventlog_records")-mins; d != 9 || m != 1 {
			t.Fatalf("the trim ran %d deletes and %d queries for the oldest offset; want 9 and 1", d, m)
		}
		var n, oldest int64
		if err := db.QueryRowContext(ctx, "SELECT COUNT(*), MIN(record_offset) FROM eventlog_records WHERE topic = 'chunks'").Scan(&n, &oldest); err != nil {
			t.Fatal(err)
		}
		if n != records+1-old || oldest != old {
			t.Fatalf("after the trim %d records from offset %d are kept; want %d from %d", n, oldest, records+1-old, old)
		}
	})
}
