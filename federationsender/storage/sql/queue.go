package sql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/matrix-org/dendrite/federationsender/storage"
	"github.com/matrix-org/dendrite/internal/sqlutil"
)

// enqueueChunk bounds the rows of one multi-row insert (SQLite allows 32766 parameters).
const enqueueChunk = 500

// Enqueue implements storage.Database.
func (d *Database) Enqueue(ctx context.Context, tx *sql.Tx, destinations []string, kind storage.Kind, content []byte) error {
	if len(destinations) == 0 {
		return nil
	}
	q := sqlutil.Conn(d.db, tx)
	var jsonNID int64
	if err := q.QueryRowContext(ctx, "INSERT INTO federationsender_queue_json (content) VALUES ($1) RETURNING json_nid", content).Scan(&jsonNID); err != nil {
		return fmt.Errorf("store queued json: %w", err)
	}
	for len(destinations) > 0 {
		n := min(len(destinations), enqueueChunk)
		var b strings.Builder
		b.WriteString("INSERT INTO federationsender_queue (destination, kind, json_nid) VALUES ")
		args := []any{string(kind), jsonNID}
		for i, dest := range destinations[:n] {
			if i > 0 {
				b.WriteByte(',')
			}
			args = append(args, dest)
			b.WriteString("($" + strconv.Itoa(len(args)) + ", $1, $2)")
		}
		if _, err := q.ExecContext(ctx, b.String(), args...); err != nil {
			return fmt.Errorf("queue for destinations: %w", err)
		}
		destinations = destinations[n:]
	}
	return nil
}

// NextTransaction implements storage.Database.
func (d *Database) NextTransaction(ctx context.Context, destination string, maxPDUs, maxEDUs int, newTxnID func() string) (*storage.Transaction, error) {
	var txnID string
	err := d.db.QueryRowContext(ctx, "SELECT txn_id FROM federationsender_queue WHERE destination = $1 AND txn_id <> '' ORDER BY queue_nid LIMIT 1",
		destination).Scan(&txnID)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		if txnID, err = d.assign(ctx, destination, maxPDUs, maxEDUs, newTxnID); err != nil || txnID == "" {
			return nil, err
		}
	case err != nil:
		return nil, fmt.Errorf("select transaction in flight: %w", err)
	}
	rows, err := d.db.QueryContext(ctx, `SELECT q.kind, j.content FROM federationsender_queue q
		JOIN federationsender_queue_json j ON j.json_nid = q.json_nid
		WHERE q.destination = $1 AND q.txn_id = $2 ORDER BY q.queue_nid`, destination, txnID)
	if err != nil {
		return nil, fmt.Errorf("select transaction: %w", err)
	}
	defer rows.Close() // nolint: errcheck // read-only
	t := &storage.Transaction{Destination: destination, TxnID: txnID}
	for rows.Next() {
		var kind string
		var content []byte
		if err := rows.Scan(&kind, &content); err != nil {
			return nil, err
		}
		if storage.Kind(kind) == storage.KindPDU {
			t.PDUs = append(t.PDUs, content)
		} else {
			t.EDUs = append(t.EDUs, content)
		}
	}
	return t, rows.Err()
}

// assign puts the destination's oldest unassigned items into a new transaction; "" when
// there are none.
func (d *Database) assign(ctx context.Context, destination string, maxPDUs, maxEDUs int, newTxnID func() string) (string, error) {
	var txnID string
	err := d.db.WithTx(ctx, func(tx *sql.Tx) error {
		var nids []int64
		for _, k := range []struct {
			kind  storage.Kind
			limit int
		}{{storage.KindPDU, maxPDUs}, {storage.KindEDU, maxEDUs}} {
			rows, err := tx.QueryContext(ctx, `SELECT queue_nid FROM federationsender_queue
				WHERE destination = $1 AND txn_id = '' AND kind = $2 ORDER BY queue_nid LIMIT $3`, destination, string(k.kind), k.limit)
			if err != nil {
				return fmt.Errorf("select queued items: %w", err)
			}
			kindNIDs, err := sqlutil.Column[int64](rows)
			if err != nil {
				return err
			}
			nids = append(nids, kindNIDs...)
		}
		if len(nids) == 0 {
			return nil
		}
		txnID = newTxnID()
		query, args := d.db.Dialect.InList("UPDATE federationsender_queue SET txn_id = $1 WHERE queue_nid IN ({nids})", "{nids}", []any{txnID}, nids)
		if _, err := tx.ExecContext(ctx, query, args...); err != nil {
			return fmt.Errorf("assign transaction: %w", err)
		}
		return nil
	})
	return txnID, err
}

// DeleteTransaction implements storage.Database.
func (d *Database) DeleteTransaction(ctx context.Context, destination, txnID string) error {
	return d.db.WithTx(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, "DELETE FROM federationsender_queue WHERE destination = $1 AND txn_id = $2 RETURNING json_nid", destination, txnID)
		if err != nil {
			return fmt.Errorf("delete sent items: %w", err)
		}
		nids, err := sqlutil.Column[int64](rows)
		if err != nil {
			return err
		}
		if len(nids) == 0 {
			return nil
		}
		query, args := d.db.Dialect.InList(`DELETE FROM federationsender_queue_json WHERE json_nid IN ({nids})
			AND NOT EXISTS (SELECT 1 FROM federationsender_queue q WHERE q.json_nid = federationsender_queue_json.json_nid)`, "{nids}", nil, nids)
		if _, err := tx.ExecContext(ctx, query, args...); err != nil {
			return fmt.Errorf("delete sent json: %w", err)
		}
		return nil
	})
}

// QueuedDestinations implements storage.Database.
func (d *Database) QueuedDestinations(ctx context.Context) ([]string, error) {
	return d.strings(ctx, nil, "SELECT DISTINCT destination FROM federationsender_queue")
}

// QueueDepth implements storage.Database.
func (d *Database) QueueDepth(ctx context.Context) (storage.Depth, error) {
	var depth storage.Depth
	err := d.db.QueryRowContext(ctx, `SELECT
		COALESCE(SUM(CASE WHEN kind = 'pdu' THEN 1 ELSE 0 END), 0),
		COALESCE(SUM(CASE WHEN kind = 'edu' THEN 1 ELSE 0 END), 0),
		COUNT(DISTINCT destination) FROM federationsender_queue`).Scan(&depth.PDUs, &depth.EDUs, &depth.Destinations)
	if err != nil {
		return depth, fmt.Errorf("count queue: %w", err)
	}
	return depth, nil
}
