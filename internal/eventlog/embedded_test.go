package eventlog_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/eventlog/logtest"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
)

func TestEmbeddedContract(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		logtest.RunLogContract(t, func(t *testing.T) eventlog.Log {
			l, err := eventlog.NewEmbedded(context.Background(), db, eventlog.Config{DefaultPartitions: 4})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = l.Close() }) // Close never fails
			// Each subtest uses its own topics, so sharing the database is safe.
			return l
		})
	})
}

func TestEmbeddedSurvivesRestart(t *testing.T) {
	path := "file:" + filepath.Join(t.TempDir(), "log.db")
	ctx := context.Background()
	open := func() (*sqlutil.DB, *eventlog.Embedded) {
		db, err := sqlutil.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		l, err := eventlog.NewEmbedded(ctx, db, eventlog.Config{DefaultPartitions: 2})
		if err != nil {
			t.Fatal(err)
		}
		return db, l
	}
	db, l := open()
	if _, err := l.Produce(ctx, "t", eventlog.Message{Key: []byte("k"), Value: []byte("one")}); err != nil {
		t.Fatal(err)
	}
	_ = l.Close() // Close never fails
	_ = db.Close()
	db, l = open()
	defer db.Close()
	defer l.Close()
	pos, err := l.Produce(ctx, "t", eventlog.Message{Key: []byte("k"), Value: []byte("two")})
	if err != nil || pos[0].Offset != 1 {
		t.Fatalf("offset after restart: %+v %v", pos, err)
	}
}

// TestConsumerExactlyOnce checks that offsets commit with the handler's writes, that a
// poison record is dead-lettered after MaxAttempts, and that a restart resumes after the
// last applied record.
func TestConsumerExactlyOnce(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		l, err := eventlog.NewEmbedded(ctx, db, eventlog.Config{DefaultPartitions: 1})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		if _, err = db.ExecContext(ctx, "CREATE TABLE applied (v TEXT NOT NULL)"); err != nil {
			t.Fatal(err)
		}
		offsets, err := eventlog.NewOffsetStore(ctx, db, "c")
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 5; i++ {
			if _, err = l.Produce(ctx, "in", eventlog.Message{Value: []byte(fmt.Sprint(i))}); err != nil {
				t.Fatal(err)
			}
		}
		run := func(until int64) {
			cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			defer cancel()
			c := &eventlog.Consumer{Log: l, DB: db, Offsets: offsets, Topic: "in", Partitions: []int32{0}, MaxAttempts: 2,
				Logger: logrus.NewEntry(logrus.New()),
				Handle: func(ctx context.Context, tx *sql.Tx, recs []eventlog.Record) error {
					for _, r := range recs {
						if _, err := tx.ExecContext(ctx, "INSERT INTO applied (v) VALUES ($1)", string(r.Value)); err != nil {
							return err
						}
						if string(r.Value) == "2" {
							return errors.New("poison")
						}
					}
					return nil
				},
				Applied: func(_ int32, next int64) {
					if next >= until {
						cancel()
					}
				}}
			if err := c.Run(cctx); err != nil {
				t.Fatal(err)
			}
		}
		run(5)
		var n int
		if err = db.QueryRowContext(ctx, "SELECT COUNT(*) FROM applied").Scan(&n); err != nil || n != 4 {
			t.Fatalf("applied rows %d (%v), want 4: the poison record's writes must roll back", n, err)
		}
		var dead int
		if err = db.QueryRowContext(ctx, "SELECT COUNT(*) FROM c_dead_letters WHERE record_offset = 2").Scan(&dead); err != nil || dead != 1 {
			t.Fatalf("dead letters %d (%v)", dead, err)
		}
		if _, err = l.Produce(ctx, "in", eventlog.Message{Value: []byte("5")}); err != nil {
			t.Fatal(err)
		}
		run(6)
		if err = db.QueryRowContext(ctx, "SELECT COUNT(*) FROM applied").Scan(&n); err != nil || n != 5 {
			t.Fatalf("after restart %d rows, want 5 (nothing applied twice)", n)
		}
	})
}

// BenchmarkProduce measures group-committed appends on SQLite.
func BenchmarkProduce(b *testing.B) {
	db, err := sqlutil.Open("file:" + filepath.Join(b.TempDir(), "log.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	l, err := eventlog.NewEmbedded(context.Background(), db, eventlog.Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	logtest.BenchmarkProduce(b, l)
}

// TestConsumerProgress: a consumer that resumes at the end of its partitions is caught up
// before its first batch (CatchUp returns without any new record), and CatchUp waits for
// a record written later until the consumer has applied it.
func TestConsumerProgress(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		l, err := eventlog.NewEmbedded(ctx, db, eventlog.Config{DefaultPartitions: 3})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		offsets, err := eventlog.NewOffsetStore(ctx, db, "p")
		if err != nil {
			t.Fatal(err)
		}
		for i := range 6 {
			if _, err = l.Produce(ctx, "prog", eventlog.Message{Key: []byte(fmt.Sprint(i)), Value: []byte(fmt.Sprint(i))}); err != nil {
				t.Fatal(err)
			}
		}
		var applied sync.Map
		run := func() (*eventlog.Progress, context.CancelFunc, chan error) {
			progress := eventlog.NewProgress(l, "prog")
			c := &eventlog.Consumer{Log: l, DB: db, Offsets: offsets, Topic: "prog", Partitions: eventlog.AllPartitions(l, "prog"),
				Logger: logrus.NewEntry(logrus.New()), Guarded: true, Progress: progress,
				Handle: func(_ context.Context, _ *sql.Tx, recs []eventlog.Record) error {
					for _, r := range recs {
						applied.Store(string(r.Value), true)
					}
					return nil
				}}
			cctx, stop := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- c.Run(cctx) }()
			return progress, stop, done
		}
		// A wait far beyond the test's deadline: CatchUp must end because the consumer
		// caught up, never because the wait ran out.
		const forever = time.Hour
		progress, stop, done := run()
		if err := progress.CatchUp(ctx, forever); err != nil {
			t.Fatal(err)
		}
		stop()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		progress, stop, done = run()
		defer func() { stop(); <-done }()
		if err := progress.CatchUp(ctx, forever); err != nil {
			t.Fatalf("a consumer resumed at the end is not caught up: %v", err)
		}
		if _, err = l.Produce(ctx, "prog", eventlog.Message{Key: []byte("late"), Value: []byte("late")}); err != nil {
			t.Fatal(err)
		}
		if err := progress.CatchUp(ctx, forever); err != nil {
			t.Fatal(err)
		}
		if _, ok := applied.Load("late"); !ok {
			t.Fatal("CatchUp returned before the record written before it was applied")
		}
	})
}

// TestEmbeddedReadsOnlyPublishedRecords: the writer commits a batch before it publishes
// the batch's end (EndOffsets), so for a moment a record sits in the table past the
// published end. A consumer that read it would be past the end the Guard reads, and the
// Guard took it for a consumer of a truncated log: it restarted the consumer at the log's
// start (seen in soaks, several times a run). The test puts such a record in the table.
func TestEmbeddedReadsOnlyPublishedRecords(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		l, err := eventlog.NewEmbedded(ctx, db, eventlog.Config{DefaultPartitions: 1})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close() //nolint:errcheck // test cleanup
		if _, err = l.Produce(ctx, "t", eventlog.Message{Key: []byte("k"), Value: []byte("published")}); err != nil {
			t.Fatal(err)
		}
		if _, err = db.ExecContext(ctx, `INSERT INTO eventlog_records (topic, partition_id, record_offset, record_key, record_value, created_ms)
			VALUES ('t', 0, 1, 'k', 'committed, not yet published', 0)`); err != nil {
			t.Fatal(err)
		}
		batches := make(chan []int64, 2)
		go func() {
			_ = l.Consume(ctx, "t", 0, 0, func(_ context.Context, recs []eventlog.Record) error {
				var offsets []int64
				for _, r := range recs {
					offsets = append(offsets, r.Offset)
				}
				batches <- offsets
				return nil
			})
		}()
		select {
		case got := <-batches:
			if len(got) != 1 || got[0] != 0 {
				t.Fatalf("first batch has offsets %v; want [0] (the published end is 1)", got)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no batch delivered")
		}
		ends, err := l.EndOffsets(ctx, "t")
		if err != nil || ends[0] != 1 {
			t.Fatalf("end offsets %v, %v; want [1]", ends, err)
		}
	})
}
