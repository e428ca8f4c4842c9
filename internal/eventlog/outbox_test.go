package eventlog_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
)

// outboxTestRecord is what TestOutboxInsertBatch stores: the record's number and key.
type outboxTestRecord struct {
	Seq int64  `json:"seq"`
	Key string `json:"key"`
}

// TestOutboxInsertBatch stores a record with Insert, 450 with InsertBatch (more than one
// INSERT's worth in some partitions) and one more with Insert, over four partitions: each
// partition's records are numbered densely from 1 in the order given, Records serves them
// in that order, and they are stored (so produced) in the order of their numbers.
func TestOutboxInsertBatch(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		logDB, err := sqlutil.Open("file:" + filepath.Join(t.TempDir(), "log.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = logDB.Close() }) // the test's own database file
		l, err := eventlog.NewEmbedded(ctx, logDB, eventlog.Config{DefaultPartitions: 4, Logger: quietLogger()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = l.Close() }) // Close never fails
		o, err := eventlog.NewOutbox(ctx, db, l, eventlog.OutboxOptions{Component: "obtest", Topic: "counts", Logger: quietLogger()})
		if err != nil {
			t.Fatal(err)
		}
		payload := func(key string) func(int64) ([]byte, error) {
			return func(seq int64) ([]byte, error) { return json.Marshal(outboxTestRecord{Seq: seq, Key: key}) }
		}
		var keys []string
		for i := range 452 {
			keys = append(keys, fmt.Sprintf("@u%d:test", i))
		}
		err = db.WithTx(ctx, func(tx *sql.Tx) error {
			if err := o.Insert(ctx, tx, keys[0], payload(keys[0])); err != nil {
				return err
			}
			var batch []eventlog.OutboxRecord
			for _, k := range keys[1:451] {
				batch = append(batch, eventlog.OutboxRecord{Key: k, Payload: payload(k)})
			}
			return o.InsertBatch(ctx, tx, batch)
		})
		if err != nil {
			t.Fatal(err)
		}
		if err = db.WithTx(ctx, func(tx *sql.Tx) error { return o.Insert(ctx, tx, keys[451], payload(keys[451])) }); err != nil {
			t.Fatal(err)
		}
		want := map[int32][]string{}
		for _, k := range keys {
			p := eventlog.PartitionFor([]byte(k), 4)
			want[p] = append(want[p], k)
		}
		total := 0
		for p := range int32(4) {
			recs, last, err := o.Records(ctx, p, 0, 0)
			if err != nil {
				t.Fatal(err)
			}
			if int(last) != len(want[p]) || len(recs) != len(want[p]) {
				t.Fatalf("partition %d: %d records, last %d, want %d", p, len(recs), last, len(want[p]))
			}
			for i, raw := range recs {
				var r outboxTestRecord
				if err := json.Unmarshal(raw, &r); err != nil {
					t.Fatal(err)
				}
				if r.Seq != int64(i+1) || r.Key != want[p][i] {
					t.Fatalf("partition %d record %d: %+v, want seq %d key %s", p, i, r, i+1, want[p][i])
				}
			}
			total += len(recs)
			rows, err := db.QueryContext(ctx, "SELECT partition_seq FROM obtest_outbox WHERE partition_id = $1 ORDER BY id", p)
			if err != nil {
				t.Fatal(err)
			}
			seqs, err := sqlutil.Column[int64](rows)
			if err != nil {
				t.Fatal(err)
			}
			for i, s := range seqs {
				if s != int64(i+1) {
					t.Fatalf("partition %d: stored in the order %v, not numbered order", p, seqs)
				}
			}
		}
		if total != len(keys) {
			t.Fatalf("%d records, want %d", total, len(keys))
		}
	})
}
