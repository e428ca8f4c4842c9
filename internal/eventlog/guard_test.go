package eventlog_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
)

// owner numbers records densely from 1 and keeps them all, as the roomserver's outbox does
// within its replay window.
type owner struct {
	mu   sync.Mutex
	recs [][]byte
}

// next numbers and keeps a new record.
func (o *owner) next() []byte {
	o.mu.Lock()
	defer o.mu.Unlock()
	v, _ := json.Marshal(map[string]int{"seq": len(o.recs) + 1}) // a map of ints always encodes
	o.recs = append(o.recs, v)
	return v
}

func (o *owner) sequenced() *eventlog.Sequenced {
	return &eventlog.Sequenced{
		Seq: seqOf,
		Fetch: func(_ context.Context, _ int32, after int64) ([][]byte, error) {
			o.mu.Lock()
			defer o.mu.Unlock()
			// Pages of two, so that a catch-up takes several.
			return o.recs[after:min(int(after)+2, len(o.recs))], nil
		},
	}
}

func seqOf(v []byte) (int64, error) {
	var r struct {
		Seq int64 `json:"seq"`
	}
	err := json.Unmarshal(v, &r)
	return r.Seq, err
}

// applied collects the numbers a consumer applied, in order.
type applied struct {
	mu   sync.Mutex
	seqs []int64
}

func (a *applied) handle(_ context.Context, _ *sql.Tx, recs []eventlog.Record) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, r := range recs {
		n, err := seqOf(r.Value)
		if err != nil {
			return err
		}
		a.seqs = append(a.seqs, n)
	}
	return nil
}

// waitFor polls until the consumer applied exactly 1..n.
func (a *applied) waitFor(ctx context.Context, t *testing.T, n int64) {
	t.Helper()
	want := make([]int64, n)
	for i := range want {
		want[i] = int64(i + 1)
	}
	for {
		a.mu.Lock()
		got := slices.Clone(a.seqs)
		a.mu.Unlock()
		if slices.Equal(got, want) {
			return
		}
		if len(got) > len(want) || ctx.Err() != nil {
			t.Fatalf("applied %v, want 1..%d exactly once in order", got, n)
		}
		time.Sleep(10 * time.Millisecond) // polling with the test's deadline
	}
}

// seqHarness runs Sequenced consumers of topic "out" (partition 0) of embedded logs, with
// their offsets in db, applying an owner's records.
type seqHarness struct {
	ctx     context.Context
	t       *testing.T
	db      *sqlutil.DB
	offsets *eventlog.OffsetStore
	owner   *owner
	got     *applied
}

func newSeqHarness(ctx context.Context, t *testing.T, db *sqlutil.DB, component string) *seqHarness {
	t.Helper()
	offsets, err := eventlog.NewOffsetStore(ctx, db, component)
	if err != nil {
		t.Fatal(err)
	}
	return &seqHarness{ctx: ctx, t: t, db: db, offsets: offsets, owner: &owner{}, got: &applied{}}
}

// open is a new, empty embedded log: opening another one is what a wipe looks like.
func (h *seqHarness) open() *eventlog.Embedded {
	logDB, err := sqlutil.Open("file:" + filepath.Join(h.t.TempDir(), "log.db"))
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { _ = logDB.Close() }) // the test's own database file
	l, err := eventlog.NewEmbedded(h.ctx, logDB, eventlog.Config{DefaultPartitions: 1, Logger: quietLogger()})
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { _ = l.Close() }) // Close never fails
	return l
}

// run starts a consumer of l; stop ends it and fails the test if it failed.
func (h *seqHarness) run(l eventlog.Log) (stop func()) {
	c := &eventlog.Consumer{Log: l, DB: h.db, Offsets: h.offsets, Topic: "out", Partitions: []int32{0}, Logger: quietLogger(),
		Handle: h.got.handle, Sequenced: h.owner.sequenced()}
	cctx, cancel := context.WithCancel(h.ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(cctx) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			h.t.Fatal(err)
		}
	}
}

// produce appends v to l's topic "out".
func (h *seqHarness) produce(l eventlog.Log, v []byte) {
	if _, err := l.Produce(h.ctx, "out", eventlog.Message{Value: v}); err != nil {
		h.t.Fatal(err)
	}
}

// TestSequencedConsumerRecoversWipedLog replaces the embedded log under a Sequenced
// consumer (its offsets on both engines) after it applied records 1-3, with records 4-5
// produced into the old log only and lost with it: the Guard notices the new log, the
// consumer catches up from the owner, reads the new log from its start skipping what it has,
// and a gap in the new log (record 9 never produced) is filled from the owner too. Every
// record is applied exactly once, in order.
func TestSequencedConsumerRecoversWipedLog(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		h := newSeqHarness(ctx, t, db, "seq")
		open, run, produce, o, got, offsets := h.open, h.run, h.produce, h.owner, h.got, h.offsets
		old := open()
		for range 3 {
			produce(old, o.next())
		}
		stop := run(old)
		got.waitFor(ctx, t, 3)
		// Handle ran; wait for its transaction to commit before stopping the consumer.
		for st, err := offsets.Position(ctx, "out", 0); st.Seq != 3; st, err = offsets.Position(ctx, "out", 0) {
			if err != nil || ctx.Err() != nil {
				t.Fatalf("stored %+v, %v; want seq 3", st, err)
			}
			time.Sleep(10 * time.Millisecond) // polling with the test's deadline
		}
		stop()
		produce(old, o.next())
		produce(old, o.next())

		wiped := open()
		produce(wiped, o.next()) // 6, at offset 0 of the new log
		stop = run(wiped)
		defer stop()
		got.waitFor(ctx, t, 6)
		produce(wiped, o.next()) // 7
		got.waitFor(ctx, t, 7)
		o.next() // 8: never produced
		produce(wiped, o.next())
		got.waitFor(ctx, t, 9)
		// Handle ran for 9; its transaction may not have committed yet.
		st, err := offsets.Position(ctx, "out", 0)
		for ; err == nil && st.Seq < 9 && ctx.Err() == nil; st, err = offsets.Position(ctx, "out", 0) {
			time.Sleep(10 * time.Millisecond) // polling with the test's deadline
		}
		if err != nil {
			t.Fatal(err)
		}
		inc, err := wiped.Incarnation(ctx, "out", 0)
		if err != nil {
			t.Fatal(err)
		}
		if st.Seq != 9 || st.Next != 3 || st.Incarnation != inc {
			t.Fatalf("stored %+v, want seq 9, next offset 3 and the new log's incarnation %q", st, inc)
		}
	})
}

// TestSequencedConsumerRecoversDeletedTopic deletes the Kafka topic under a running
// Sequenced consumer and loses records with it: the Guard sees the topic's new ID, the
// consumer catches up from the owner and goes on with the recreated topic.
func TestSequencedConsumerRecoversDeletedTopic(t *testing.T) {
	db, err := sqlutil.Open("file:" + filepath.Join(t.TempDir(), "consumer.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() }) // the test's own database file
	c := newCluster(t)
	l := newKafka(t, kafkaConfig(c.ListenAddrs(), 1))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	offsets, err := eventlog.NewOffsetStore(ctx, db, "seq")
	if err != nil {
		t.Fatal(err)
	}
	o := &owner{}
	got := &applied{}
	produce := func(v []byte) {
		if _, err := l.Produce(ctx, "out", eventlog.Message{Value: v}); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 {
		produce(o.next())
	}
	cons := &eventlog.Consumer{Log: l, DB: db, Offsets: offsets, Topic: "out", Partitions: []int32{0}, Logger: quietLogger(),
		Handle: got.handle, Sequenced: o.sequenced()}
	cctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- cons.Run(cctx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}()
	got.waitFor(ctx, t, 3)
	if err := newAdmin(t, c.ListenAddrs()).DeleteTopic("out"); err != nil {
		t.Fatal(err)
	}
	o.next() // 4: lost with the topic
	o.next() // 5: lost with the topic
	produce(o.next())
	got.waitFor(ctx, t, 6)
	for range 2 {
		produce(o.next())
	}
	got.waitFor(ctx, t, 8)
}

// TestSequencedConsumerStartedOnEmptyLogRecoversWipe starts a Sequenced consumer on a
// partition nothing was written to yet: it stores the log's incarnation before reading, so
// when the log is wiped right after the consumer applied records 1-3 and the new log grows
// back to the consumer's offset with records 4-6 (as an owner's outbox produces again after
// a restart), the consumer still sees another log, catches up from the owner and applies
// 4-6. Storing the incarnation only on the Guard's next check, a second later, the
// consumer took the new log for its own and skipped them.
func TestSequencedConsumerStartedOnEmptyLogRecoversWipe(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		h := newSeqHarness(ctx, t, db, "seqempty")
		open, run, produce, o, got, offsets := h.open, h.run, h.produce, h.owner, h.got, h.offsets
		// position polls the stored position until ok accepts it.
		position := func(ok func(eventlog.Stored) bool) eventlog.Stored {
			for {
				st, err := offsets.Position(ctx, "out", 0)
				if err == nil && ok(st) {
					return st
				}
				if ctx.Err() != nil {
					t.Fatalf("stored %+v, %v", st, err)
				}
				time.Sleep(10 * time.Millisecond) // polling with the test's deadline
			}
		}

		old := open()
		stop := run(old)
		st := position(func(st eventlog.Stored) bool { return st.Incarnation != "" })
		inc, err := old.Incarnation(ctx, "out", 0)
		if err != nil {
			t.Fatal(err)
		}
		if st.Incarnation != inc || st.Next != 0 {
			t.Fatalf("stored %+v before any record, want offset 0 in the log's incarnation %q", st, inc)
		}
		for range 3 {
			produce(old, o.next())
		}
		got.waitFor(ctx, t, 3)
		position(func(st eventlog.Stored) bool { return st.Seq == 3 })
		stop()

		wiped := open()
		for range 3 {
			produce(wiped, o.next()) // 4-6 at offsets 0-2: the new log's end is the consumer's offset
		}
		stop = run(wiped)
		defer stop()
		got.waitFor(ctx, t, 6)
	})
}
