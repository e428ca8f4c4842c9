package sql

import (
	"context"
	"database/sql"
	"strconv"
	"strings"
	"time"

	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/roomserver/storage"
	"github.com/matrix-org/dendrite/roomserver/types"
)

// writer makes the changes of one transaction. It lives only for the duration of the
// Write callback, so keeping the callback's context is safe.
type writer struct {
	ctx     context.Context
	tx      *sql.Tx
	offsets *eventlog.OffsetStore
	dialect sqlutil.Dialect
}

func (w *writer) insertReturning(query string, args ...any) (int64, error) {
	var nid int64
	err := w.tx.QueryRowContext(w.ctx, query, args...).Scan(&nid)
	return nid, err
}

func (w *writer) InsertRoom(roomID, roomVersion string) (types.RoomNID, error) {
	nid, err := w.insertReturning("INSERT INTO roomserver_rooms (room_id, room_version) VALUES ($1, $2) RETURNING room_nid", roomID, roomVersion)
	return types.RoomNID(nid), err
}

func (w *writer) UpdateRoom(r *storage.Room) error {
	latest := make([]string, len(r.Latest))
	for i, n := range r.Latest {
		latest[i] = strconv.FormatInt(int64(n), 10)
	}
	_, err := w.tx.ExecContext(w.ctx, "UPDATE roomserver_rooms SET snapshot_nid = $1, latest_event_nids = $2, depth = $3 WHERE room_nid = $4",
		r.Snapshot, strings.Join(latest, ","), r.Depth, r.NID)
	return err
}

func (w *writer) InsertEvent(e *storage.Event) (types.EventNID, error) {
	nid, err := w.insertReturning(`INSERT INTO roomserver_events
		(room_nid, event_id, type_nid, state_key_nid, is_state, depth, before_snapshot_nid, redacted, outlier, soft_failed, rejected, redacts, event_json)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING event_nid`,
		e.RoomNID, e.EventID, e.Type, e.StateKey, e.IsState, e.Depth, e.Before, e.Redacted, e.Outlier, e.SoftFailed, e.Rejected, e.Redacts, e.JSON)
	return types.EventNID(nid), err
}

func (w *writer) InsertBlock(entries []types.StateEntry) (types.BlockNID, error) {
	nid, err := w.insertReturning("INSERT INTO roomserver_state_blocks (entries) VALUES ($1) RETURNING block_nid", types.EncodeEntries(entries))
	return types.BlockNID(nid), err
}

func (w *writer) InsertSnapshot(roomNID types.RoomNID, blocks [types.Buckets]types.BlockNID) (types.SnapshotNID, error) {
	nid, err := w.insertReturning("INSERT INTO roomserver_state_snapshots (room_nid, block_nids) VALUES ($1, $2) RETURNING snapshot_nid",
		roomNID, types.EncodeBlockNIDs(blocks))
	return types.SnapshotNID(nid), err
}

func (w *writer) RedactEvent(nid types.EventNID, redactedJSON []byte) error {
	_, err := w.tx.ExecContext(w.ctx, "UPDATE roomserver_events SET redacted = TRUE, event_json = $1 WHERE event_nid = $2", redactedJSON, nid)
	return err
}

func (w *writer) RedactionsOf(roomNID types.RoomNID, eventID string) ([]storage.Event, error) {
	rows, err := w.tx.QueryContext(w.ctx, "SELECT "+eventColumns+` FROM roomserver_events
		WHERE redacts = $1 AND room_nid = $2 AND NOT outlier AND NOT soft_failed AND NOT rejected`, eventID, roomNID)
	if err != nil {
		return nil, err
	}
	return scanEvents(rows)
}

func (w *writer) HasRedactions(roomNID types.RoomNID) (bool, error) {
	var n int
	err := w.tx.QueryRowContext(w.ctx, "SELECT COUNT(*) FROM (SELECT 1 FROM roomserver_events WHERE redacts <> '' AND room_nid = $1 LIMIT 1) AS r", roomNID).Scan(&n)
	return n > 0, err
}

func (w *writer) PlaceEvent(nid types.EventNID, before types.SnapshotNID, softFailed bool) error {
	_, err := w.tx.ExecContext(w.ctx, "UPDATE roomserver_events SET outlier = FALSE, before_snapshot_nid = $1, soft_failed = $2 WHERE event_nid = $3", before, softFailed, nid)
	return err
}

func (w *writer) RejectEvent(nid types.EventNID, before types.SnapshotNID) error {
	_, err := w.tx.ExecContext(w.ctx, "UPDATE roomserver_events SET outlier = FALSE, rejected = TRUE, before_snapshot_nid = $1 WHERE event_nid = $2", before, nid)
	return err
}

func (w *writer) InsertTransaction(roomNID types.RoomNID, t storage.Transaction) error {
	_, err := w.tx.ExecContext(w.ctx, `INSERT INTO roomserver_transactions (room_nid, user_id, device_id, txn_id, event_id)
		VALUES ($1, $2, $3, $4, $5) ON CONFLICT (room_nid, user_id, device_id, txn_id) DO NOTHING`, roomNID, t.UserID, t.DeviceID, t.TxnID, t.EventID)
	return err
}

func (w *writer) SetMembership(roomNID types.RoomNID, m storage.Membership) error {
	_, err := w.tx.ExecContext(w.ctx, `INSERT INTO roomserver_memberships (room_nid, user_id, membership, event_id)
		VALUES ($1, $2, $3, $4) ON CONFLICT (room_nid, user_id) DO UPDATE SET membership = $3, event_id = $4`,
		roomNID, m.UserID, m.Membership, m.EventID)
	return err
}

func (w *writer) NextOutputSeq(partition int32) (int64, error) {
	return w.insertReturning(`INSERT INTO roomserver_output_seqs (partition_id, last_seq) VALUES ($1, 1)
		ON CONFLICT (partition_id) DO UPDATE SET last_seq = roomserver_output_seqs.last_seq + 1 RETURNING last_seq`, partition)
}

func (w *writer) InsertOutbox(o storage.Outbound) (int64, error) {
	return w.insertReturning(`INSERT INTO roomserver_outbox (room_id, partition_id, partition_seq, payload, event_nid, created_ms)
		VALUES ($1, $2, $3, $4, $5, $6) RETURNING seq`, o.RoomID, o.Partition, o.PartitionSeq, o.Payload, o.EventNID, time.Now().UnixMilli())
}

func (w *writer) MarkProduced(seqs []int64) error {
	if len(seqs) == 0 {
		return nil
	}
	query, args := w.dialect.InList("UPDATE roomserver_outbox SET produced = TRUE WHERE seq IN ({list})", "{list}", nil, seqs)
	_, err := w.tx.ExecContext(w.ctx, query, args...)
	return err
}

func (w *writer) SaveOffset(topic string, partition int32, next int64) error {
	return w.offsets.Save(w.ctx, w.tx, topic, partition, next)
}
