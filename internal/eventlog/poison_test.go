package eventlog_test

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	logtesthook "github.com/sirupsen/logrus/hooks/test"

	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
)

// labelledCounter is the value of the counter name with labels on reg (0 when absent).
func labelledCounter(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	metrics:
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if labels[l.GetName()] != l.GetValue() {
					continue metrics
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// TestConsumerPoisonPolicy: a record that keeps failing is tried MaxAttempts times alone,
// with the waits between attempts growing from Backoff (no hot loop), then written to the
// dead-letter table with its error, counted, logged and reported (DeadLettered, before
// Applied passes it), and the records after it are applied; a record whose error is marked
// Poison is dead-lettered at its first attempt alone.
func TestConsumerPoisonPolicy(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		l, err := eventlog.NewEmbedded(ctx, db, eventlog.Config{DefaultPartitions: 1})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		offsets, err := eventlog.NewOffsetStore(ctx, db, "pp")
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range []string{"a", "failing", "b", "undecodable", "c"} {
			if _, err = l.Produce(ctx, "pois", eventlog.Message{Value: []byte(v)}); err != nil {
				t.Fatal(err)
			}
		}
		reg := prometheus.NewRegistry()
		logger, hook := logtesthook.NewNullLogger()
		var mu sync.Mutex
		alone := map[string][]time.Time{} // record -> times it was tried alone
		var applied, reported []string
		var next int64
		const backoff = 50 * time.Millisecond
		cctx, stop := context.WithCancel(ctx)
		defer stop()
		c := &eventlog.Consumer{Log: l, DB: db, Offsets: offsets, Topic: "pois", Partitions: []int32{0}, Name: "tester",
			MaxAttempts: 3, Backoff: backoff, Logger: logrus.NewEntry(logger), Metrics: eventlog.NewMetrics(reg),
			Prepare: func(_ context.Context, recs []eventlog.Record) (eventlog.Step, error) {
				mu.Lock()
				defer mu.Unlock()
				var vals []string
				for _, r := range recs {
					v := string(r.Value)
					if len(recs) == 1 {
						alone[v] = append(alone[v], time.Now())
					}
					switch v {
					case "failing":
						return eventlog.Step{}, errors.New("cannot apply the failing record")
					case "undecodable":
						return eventlog.Step{}, eventlog.Poison(errors.New("record does not decode"))
					}
					vals = append(vals, v)
				}
				return eventlog.Step{After: func(context.Context) {
					mu.Lock()
					applied = append(applied, vals...)
					mu.Unlock()
				}}, nil
			},
			DeadLettered: func(p int32, r eventlog.Record, cause error) {
				mu.Lock()
				defer mu.Unlock()
				if next > r.Offset {
					t.Errorf("dead letter at %d reported after Applied passed it (next %d)", r.Offset, next)
				}
				reported = append(reported, string(r.Value)+":"+cause.Error())
			},
			Applied: func(_ int32, n int64) {
				mu.Lock()
				next = n
				mu.Unlock()
				if n >= 5 {
					stop()
				}
			}}
		if err := c.Run(cctx); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		defer mu.Unlock()
		if strings.Join(applied, ",") != "a,b,c" {
			t.Fatalf("applied %v, want a,b,c", applied)
		}
		if want := "failing:cannot apply the failing record,undecodable:record does not decode"; strings.Join(reported, ",") != want {
			t.Fatalf("dead letters reported %q, want %q", strings.Join(reported, ","), want)
		}
		tries := alone["failing"]
		if len(tries) != 3 {
			t.Fatalf("the failing record was tried alone %d times, want MaxAttempts (3)", len(tries))
		}
		for i := 1; i < len(tries); i++ {
			if want := backoff << (i - 1); tries[i].Sub(tries[i-1]) < want {
				t.Fatalf("attempt %d came %v after the one before, want at least %v", i+1, tries[i].Sub(tries[i-1]), want)
			}
		}
		if n := len(alone["undecodable"]); n != 1 {
			t.Fatalf("the poison record was tried alone %d times, want 1", n)
		}
		rows, err := db.QueryContext(ctx, "SELECT record_offset, error FROM pp_dead_letters ORDER BY record_offset")
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var dead []string
		for rows.Next() {
			var off int64
			var cause string
			if err := rows.Scan(&off, &cause); err != nil {
				t.Fatal(err)
			}
			dead = append(dead, string(rune('0'+off))+":"+cause)
		}
		if want := "1:cannot apply the failing record|3:record does not decode"; strings.Join(dead, "|") != want {
			t.Fatalf("dead letters %q, want %q", strings.Join(dead, "|"), want)
		}
		if v := labelledCounter(t, reg, "dendrite_eventlog_dead_letters_total", map[string]string{"topic": "pois", "consumer": "tester"}); v != 2 {
			t.Fatalf("dead letters counted %v, want 2", v)
		}
		var logged int
		for _, e := range hook.AllEntries() {
			if e.Level == logrus.ErrorLevel && strings.Contains(e.Message, "dead-lettered") && e.Data["offset"] != nil {
				logged++
			}
		}
		if logged != 2 {
			t.Fatalf("%d dead letters logged as errors, want 2", logged)
		}
	})
}

// TestConsumerReadinessReportsStuck: while a consumer retries a record whose error is
// marked Retry (beyond MaxAttempts: such a record is never dead-lettered), the log's Ready
// names its partition (ErrStuck); once the record applies, Ready is clean again.
func TestConsumerReadinessReportsStuck(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		l, err := eventlog.NewEmbedded(ctx, db, eventlog.Config{DefaultPartitions: 2})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		offsets, err := eventlog.NewOffsetStore(ctx, db, "st")
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Ready(ctx); err != nil {
			t.Fatalf("ready before anything runs: %v", err)
		}
		pos, err := l.Produce(ctx, "stuck", eventlog.Message{Key: []byte("k"), Value: []byte("v")})
		if err != nil {
			t.Fatal(err)
		}
		partition := pos[0].Partition
		var mu sync.Mutex
		down, attempts, done := true, 0, false
		cctx, stop := context.WithCancel(ctx)
		c := &eventlog.Consumer{Log: l, DB: db, Offsets: offsets, Topic: "stuck", Partitions: eventlog.AllPartitions(l, "stuck"),
			MaxAttempts: 2, Backoff: 10 * time.Millisecond, Logger: logrus.NewEntry(logrus.New()),
			Handle: func(context.Context, *sql.Tx, []eventlog.Record) error {
				mu.Lock()
				defer mu.Unlock()
				attempts++
				if down {
					return eventlog.Retry(errors.New("the owner does not answer"))
				}
				return nil
			},
			Applied: func(p int32, next int64) {
				if p == partition && next == pos[0].Offset+1 {
					mu.Lock()
					done = true
					mu.Unlock()
				}
			}}
		ran := make(chan error, 1)
		go func() { ran <- c.Run(cctx) }()
		defer func() {
			stop()
			if err := <-ran; err != nil {
				t.Error(err)
			}
		}()
		want := "stuck/" + string(rune('0'+partition))
		poll(t, ctx, func() bool {
			err := l.Ready(ctx)
			mu.Lock()
			defer mu.Unlock()
			return errors.Is(err, eventlog.ErrStuck) && strings.Contains(err.Error(), want) && attempts > 4
		})
		mu.Lock()
		down = false
		mu.Unlock()
		poll(t, ctx, func() bool {
			mu.Lock()
			defer mu.Unlock()
			return done
		})
		poll(t, ctx, func() bool { return l.Ready(ctx) == nil })
		var dead int
		if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM st_dead_letters").Scan(&dead); err != nil || dead != 0 {
			t.Fatalf("dead letters %d (%v): a record failing with a Retry error is never dead-lettered", dead, err)
		}
	})
}

// poll waits until cond holds or ctx ends.
func poll(t *testing.T, ctx context.Context, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatal("condition not met before the deadline")
		case <-time.After(10 * time.Millisecond):
		}
	}
}
