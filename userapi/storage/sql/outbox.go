package sql

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/matrix-org/dendrite/userapi/storage"
)

// insertOutput numbers out in its partition and stores it in the outbox, inside tx. The
// number's row is locked until tx ends (PostgreSQL's row lock; SQLite serializes writes),
// so a record becomes visible only after every record numbered below it in its partition.
func insertOutput(ctx context.Context, tx *sql.Tx, out *storage.Output) (*storage.Outbound, error) {
	if out == nil {
		return nil, nil
	}
	o := &storage.Outbound{Topic: out.Topic, Partition: out.Partition, Key: out.Key}
	if err := tx.QueryRowContext(ctx, `INSERT INTO userapi_output_seqs (topic, partition_id, last_seq) VALUES ($1, $2, 1)
		ON CONFLICT (topic, partition_id) DO UPDATE SET last_seq = userapi_output_seqs.last_seq + 1 RETURNING last_seq`,
		out.Topic, out.Partition).Scan(&o.Seq); err != nil {
		return nil, fmt.Errorf("number output: %w", err)
	}
	payload, err := out.Payload(o.Seq)
	if err != nil {
		return nil, err
	}
	o.Payload = payload
	if err = tx.QueryRowContext(ctx, `INSERT INTO userapi_outbox (topic, partition_id, partition_seq, msg_key, payload, created_ms)
		VALUES ($1, $2, $3, $4, $5, $6) RETURNING id`, o.Topic, o.Partition, o.Seq, o.Key, o.Payload, time.Now().UnixMilli()).Scan(&o.ID); err != nil {
		return nil, fmt.Errorf("insert output: %w", err)
	}
	return o, nil
}

// insertAnnounced stores in the outbox, inside tx, the records ann makes of result (see
// storage.Announcement).
func insertAnnounced[T any](ctx context.Context, tx *sql.Tx, ann storage.Announcement[T], result T) error {
	if ann == nil {
		return nil
	}
	outs, err := ann(result)
	if err != nil {
		return fmt.Errorf("announce key change: %w", err)
	}
	for _, o := range outs {
		if _, err = insertOutput(ctx, tx, o); err != nil {
			return err
		}
	}
	return nil
}

// Outbox implements storage.Database.
func (d *Database) Outbox(ctx context.Context) ([]storage.Outbound, error) {
	return d.outbound(ctx, "SELECT id, topic, partition_id, partition_seq, msg_key, payload FROM userapi_outbox WHERE NOT produced ORDER BY id")
}

// MarkProduced implements storage.Database.
func (d *Database) MarkProduced(ctx context.Context, ids []int64) error {
	if len(ids) == 0 {
		return nil
	}
	query, args := d.db.Dialect.InList("UPDATE userapi_outbox SET produced = TRUE WHERE id IN ({list})", "{list}", nil, ids)
	return d.exec(ctx, "mark outputs produced", query, args...)
}

// PruneOutbox implements storage.Database.
func (d *Database) PruneOutbox(ctx context.Context, before time.Time) error {
	return d.exec(ctx, "prune outbox", "DELETE FROM userapi_outbox WHERE produced AND created_ms < $1", before.UnixMilli())
}

// OutputsAfter implements storage.Database.
func (d *Database) OutputsAfter(ctx context.Context, topic string, partition int32, after int64, limit int) ([]storage.Outbound, int64, error) {
	var last int64
	err := d.db.QueryRowContext(ctx, "SELECT last_seq FROM userapi_output_seqs WHERE topic = $1 AND partition_id = $2", topic, partition).Scan(&last)
	if err != nil && err != sql.ErrNoRows {
		return nil, 0, fmt.Errorf("select last output number: %w", err)
	}
	out, err := d.outbound(ctx, `SELECT id, topic, partition_id, partition_seq, msg_key, payload FROM userapi_outbox
		WHERE topic = $1 AND partition_id = $2 AND partition_seq > $3 ORDER BY partition_seq LIMIT $4`, topic, partition, after, limit)
	return out, last, err
}

func (d *Database) outbound(ctx context.Context, query string, args ...any) ([]storage.Outbound, error) {
	rows, err := d.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("select outbox: %w", err)
	}
	defer rows.Close() // nolint: errcheck // rows.Err reports what matters
	var out []storage.Outbound
	for rows.Next() {
		var o storage.Outbound
		if err := rows.Scan(&o.ID, &o.Topic, &o.Partition, &o.Seq, &o.Key, &o.Payload); err != nil {
			return nil, fmt.Errorf("scan outbox: %w", err)
		}
		out = append(out, o)
	}
	return out, rows.Err()
}
