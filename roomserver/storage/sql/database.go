package sql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/roomserver/storage"
	"github.com/matrix-org/dendrite/roomserver/types"
)

// Database is the SQL roomserver store.
type Database struct {
	db      *sqlutil.DB
	offsets *eventlog.OffsetStore
}

// Open migrates the schema and returns the store. offsets keeps the roomserver's input
// positions in the same database, so they commit with the events.
func Open(ctx context.Context, db *sqlutil.DB, offsets *eventlog.OffsetStore) (*Database, error) {
	if err := sqlutil.Migrate(ctx, db, "roomserver", migrations); err != nil {
		return nil, fmt.Errorf("migrate roomserver schema: %w", err)
	}
	return &Database{db: db, offsets: offsets}, nil
}

// TypeNIDs implements storage.Database.
func (d *Database) TypeNIDs(ctx context.Context, names []string) (map[string]types.TypeNID, error) {
	m, err := d.assignNIDs(ctx, "roomserver_event_types", "type_nid", "event_type", names, true)
	out := make(map[string]types.TypeNID, len(m))
	for k, v := range m {
		out[k] = types.TypeNID(v)
	}
	return out, err
}

// StateKeyNIDs implements storage.Database.
func (d *Database) StateKeyNIDs(ctx context.Context, keys []string) (map[string]types.StateKeyNID, error) {
	m, err := d.assignNIDs(ctx, "roomserver_state_keys", "state_key_nid", "state_key", keys, true)
	out := make(map[string]types.StateKeyNID, len(m))
	for k, v := range m {
		out[k] = types.StateKeyNID(v)
	}
	return out, err
}

// KnownTypeNIDs implements storage.Database.
func (d *Database) KnownTypeNIDs(ctx context.Context, names []string) (map[string]types.TypeNID, error) {
	m, err := d.assignNIDs(ctx, "roomserver_event_types", "type_nid", "event_type", names, false)
	out := make(map[string]types.TypeNID, len(m))
	for k, v := range m {
		out[k] = types.TypeNID(v)
	}
	return out, err
}

// KnownStateKeyNIDs implements storage.Database.
func (d *Database) KnownStateKeyNIDs(ctx context.Context, keys []string) (map[string]types.StateKeyNID, error) {
	m, err := d.assignNIDs(ctx, "roomserver_state_keys", "state_key_nid", "state_key", keys, false)
	out := make(map[string]types.StateKeyNID, len(m))
	for k, v := range m {
		out[k] = types.StateKeyNID(v)
	}
	return out, err
}

func (d *Database) assignNIDs(ctx context.Context, table, nidCol, nameCol string, names []string, assign bool) (map[string]int64, error) {
	out := make(map[string]int64, len(names))
	if len(names) == 0 {
		return out, nil
	}
	sel := "SELECT " + nidCol + ", " + nameCol + " FROM " + table + " WHERE " + nameCol + " IN ({names})"
	load := func(q sqlutil.Querier) error {
		query, args := d.db.Dialect.InList(sel, "{names}", nil, names)
		rows, err := q.QueryContext(ctx, query, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var nid int64
			var name string
			if err := rows.Scan(&nid, &name); err != nil {
				return err
			}
			out[name] = nid
		}
		return rows.Err()
	}
	if err := load(d.db); err != nil {
		return nil, fmt.Errorf("select %s: %w", table, err)
	}
	if len(out) == len(names) || !assign {
		return out, nil
	}
	var missing []any
	seen := make(map[string]bool, len(names))
	for _, n := range names {
		if _, ok := out[n]; !ok && !seen[n] {
			seen[n] = true
			missing = append(missing, n)
		}
	}
	// One statement per 500 new names (a remote join brings thousands of new state keys).
	err := d.db.WithTx(ctx, func(tx *sql.Tx) error {
		for start := 0; start < len(missing); start += 500 {
			chunk := missing[start:min(start+500, len(missing))]
			var q strings.Builder
			q.WriteString("INSERT INTO " + table + " (" + nameCol + ") VALUES ")
			for i := range chunk {
				if i > 0 {
					q.WriteString(", ")
				}
				q.WriteString("($" + strconv.Itoa(i+1) + ")")
			}
			q.WriteString(" ON CONFLICT (" + nameCol + ") DO NOTHING")
			if _, err := tx.ExecContext(ctx, q.String(), chunk...); err != nil {
				return err
			}
		}
		return load(tx)
	})
	if err != nil {
		return nil, fmt.Errorf("assign %s: %w", table, err)
	}
	return out, nil
}

const roomColumns = "room_nid, room_id, room_version, snapshot_nid, latest_event_nids, depth"

func scanRoom(row *sql.Row) (*storage.Room, error) {
	var r storage.Room
	var latest string
	if err := row.Scan(&r.NID, &r.RoomID, &r.RoomVersion, &r.Snapshot, &latest, &r.Depth); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return nil, storage.ErrNotFound
		}
		return nil, err
	}
	for _, s := range strings.Split(latest, ",") {
		if s == "" {
			continue
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("corrupt latest events of %s: %w", r.RoomID, err)
		}
		r.Latest = append(r.Latest, types.EventNID(n))
	}
	return &r, nil
}

// Room implements storage.Database.
func (d *Database) Room(ctx context.Context, roomID string) (*storage.Room, error) {
	return scanRoom(d.db.QueryRowContext(ctx, "SELECT "+roomColumns+" FROM roomserver_rooms WHERE room_id = $1", roomID))
}

// RoomByNID implements storage.Database.
func (d *Database) RoomByNID(ctx context.Context, nid types.RoomNID) (*storage.Room, error) {
	return scanRoom(d.db.QueryRowContext(ctx, "SELECT "+roomColumns+" FROM roomserver_rooms WHERE room_nid = $1", nid))
}

// Rooms implements storage.Database.
func (d *Database) Rooms(ctx context.Context, after string, limit int) ([]string, error) {
	rows, err := d.db.QueryContext(ctx, "SELECT room_id FROM roomserver_rooms WHERE room_id > $1 ORDER BY room_id LIMIT $2", after, limit)
	if err != nil {
		return nil, fmt.Errorf("select rooms: %w", err)
	}
	defer rows.Close()
	out := []string{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		out = append(out, id)
	}
	return out, rows.Err()
}

// Timeline implements storage.Database.
func (d *Database) Timeline(ctx context.Context, roomNID types.RoomNID, before types.EventNID, limit int) ([]storage.Event, error) {
	if before <= 0 {
		before = math.MaxInt64
	}
	rows, err := d.db.QueryContext(ctx, "SELECT "+eventColumns+` FROM roomserver_events
		WHERE room_nid = $1 AND event_nid < $2 AND NOT outlier ORDER BY event_nid DESC LIMIT $3`, roomNID, before, limit)
	if err != nil {
		return nil, fmt.Errorf("select timeline: %w", err)
	}
	return scanEvents(rows)
}

const eventColumns = "event_nid, room_nid, event_id, type_nid, state_key_nid, is_state, depth, before_snapshot_nid, redacted, outlier, soft_failed, rejected, event_json"

func (d *Database) selectEvents(ctx context.Context, where string, list any) ([]storage.Event, error) {
	query, args := d.db.Dialect.InList("SELECT "+eventColumns+" FROM roomserver_events WHERE "+where, "{list}", nil, list)
	rows, err := d.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("select events: %w", err)
	}
	return scanEvents(rows)
}

func scanEvents(rows *sql.Rows) ([]storage.Event, error) {
	defer rows.Close()
	var out []storage.Event
	for rows.Next() {
		var e storage.Event
		if err := rows.Scan(&e.NID, &e.RoomNID, &e.EventID, &e.Type, &e.StateKey, &e.IsState, &e.Depth, &e.Before, &e.Redacted, &e.Outlier, &e.SoftFailed, &e.Rejected, &e.JSON); err != nil {
			return nil, fmt.Errorf("scan event: %w", err)
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// EventsByNID implements storage.Database.
func (d *Database) EventsByNID(ctx context.Context, nids []types.EventNID) ([]storage.Event, error) {
	if len(nids) == 0 {
		return nil, nil
	}
	return d.selectEvents(ctx, "event_nid IN ({list})", nids)
}

// EventsByID implements storage.Database.
func (d *Database) EventsByID(ctx context.Context, ids []string) ([]storage.Event, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	return d.selectEvents(ctx, "event_id IN ({list})", ids)
}

// Snapshot implements storage.Database.
func (d *Database) Snapshot(ctx context.Context, nid types.SnapshotNID) ([types.Buckets]types.BlockNID, error) {
	var raw []byte
	err := d.db.QueryRowContext(ctx, "SELECT block_nids FROM roomserver_state_snapshots WHERE snapshot_nid = $1", nid).Scan(&raw)
	if errors.Is(err, sql.ErrNoRows) {
		return [types.Buckets]types.BlockNID{}, storage.ErrNotFound
	}
	if err != nil {
		return [types.Buckets]types.BlockNID{}, fmt.Errorf("select snapshot %d: %w", nid, err)
	}
	return types.DecodeBlockNIDs(raw)
}

// Blocks implements storage.Database.
func (d *Database) Blocks(ctx context.Context, nids []types.BlockNID) (map[types.BlockNID][]types.StateEntry, error) {
	out := make(map[types.BlockNID][]types.StateEntry, len(nids))
	if len(nids) == 0 {
		return out, nil
	}
	query, args := d.db.Dialect.InList("SELECT block_nid, entries FROM roomserver_state_blocks WHERE block_nid IN ({list})", "{list}", nil, nids)
	rows, err := d.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("select state blocks: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var nid types.BlockNID
		var raw []byte
		if err := rows.Scan(&nid, &raw); err != nil {
			return nil, err
		}
		entries, err := types.DecodeEntries(raw)
		if err != nil {
			return nil, fmt.Errorf("block %d: %w", nid, err)
		}
		out[nid] = entries
	}
	return out, rows.Err()
}

// Transactions implements storage.Database.
func (d *Database) Transactions(ctx context.Context, roomNID types.RoomNID, keys []storage.Transaction) ([]storage.Transaction, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	// Each key is matched on the whole primary key, so the index finds it directly.
	var match strings.Builder
	args := []any{roomNID}
	for n, k := range keys {
		if n > 0 {
			match.WriteString(" OR ")
		}
		fmt.Fprintf(&match, "(user_id = $%d AND device_id = $%d AND txn_id = $%d)", len(args)+1, len(args)+2, len(args)+3)
		args = append(args, k.UserID, k.DeviceID, k.TxnID)
	}
	rows, err := d.db.QueryContext(ctx, "SELECT user_id, device_id, txn_id, event_id FROM roomserver_transactions WHERE room_nid = $1 AND ("+match.String()+")", args...)
	if err != nil {
		return nil, fmt.Errorf("select transactions: %w", err)
	}
	defer rows.Close()
	var out []storage.Transaction
	for rows.Next() {
		var t storage.Transaction
		if err := rows.Scan(&t.UserID, &t.DeviceID, &t.TxnID, &t.EventID); err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// Membership implements storage.Database.
func (d *Database) Membership(ctx context.Context, roomNID types.RoomNID, userID string) (*storage.Membership, error) {
	m := storage.Membership{UserID: userID}
	err := d.db.QueryRowContext(ctx, "SELECT membership, event_id FROM roomserver_memberships WHERE room_nid = $1 AND user_id = $2",
		roomNID, userID).Scan(&m.Membership, &m.EventID)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, storage.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("select membership: %w", err)
	}
	return &m, nil
}

// RoomsForUser implements storage.Database.
func (d *Database) RoomsForUser(ctx context.Context, userID, membership string) ([]string, error) {
	rows, err := d.db.QueryContext(ctx, `SELECT r.room_id FROM roomserver_memberships m
		JOIN roomserver_rooms r ON r.room_nid = m.room_nid WHERE m.user_id = $1 AND m.membership = $2 ORDER BY r.room_nid`,
		userID, membership)
	if err != nil {
		return nil, fmt.Errorf("select rooms for user: %w", err)
	}
	defer rows.Close()
	out := []string{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		out = append(out, id)
	}
	return out, rows.Err()
}

// UsersOfServer implements storage.Database.
func (d *Database) UsersOfServer(ctx context.Context, roomNID types.RoomNID, server string) ([]string, error) {
	rows, err := d.db.QueryContext(ctx, `SELECT user_id FROM roomserver_memberships WHERE room_nid = $1 AND user_id LIKE $2 ESCAPE '\'`,
		roomNID, "%:"+sqlutil.EscapeLike(server))
	if err != nil {
		return nil, fmt.Errorf("select users of server: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		// LIKE matched the ID's end; the server is everything after the first colon.
		if _, domain, ok := strings.Cut(id, ":"); ok && domain == server {
			out = append(out, id)
		}
	}
	return out, rows.Err()
}

// Outbox implements storage.Database.
func (d *Database) Outbox(ctx context.Context) ([]storage.Outbound, error) {
	return d.outbound(ctx, "SELECT seq, room_id, partition_id, partition_seq, payload, event_nid FROM roomserver_outbox WHERE NOT produced ORDER BY seq")
}

func (d *Database) outbound(ctx context.Context, query string, args ...any) ([]storage.Outbound, error) {
	rows, err := d.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("select outbox: %w", err)
	}
	defer rows.Close()
	var out []storage.Outbound
	for rows.Next() {
		var o storage.Outbound
		if err := rows.Scan(&o.Seq, &o.RoomID, &o.Partition, &o.PartitionSeq, &o.Payload, &o.EventNID); err != nil {
			return nil, err
		}
		out = append(out, o)
	}
	return out, rows.Err()
}

// MarkProduced implements storage.Database.
func (d *Database) MarkProduced(ctx context.Context, seqs []int64) error {
	if len(seqs) == 0 {
		return nil
	}
	query, args := d.db.Dialect.InList("UPDATE roomserver_outbox SET produced = TRUE WHERE seq IN ({list})", "{list}", nil, seqs)
	return d.db.WithTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, query, args...)
		return err
	})
}

// PruneOutbox implements storage.Database.
func (d *Database) PruneOutbox(ctx context.Context, before time.Time) error {
	return d.db.WithTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, "DELETE FROM roomserver_outbox WHERE produced AND created_ms < $1", before.UnixMilli())
		return err
	})
}

// OutputsAfter implements storage.Database.
func (d *Database) OutputsAfter(ctx context.Context, partition int32, after int64, limit int) ([]storage.Outbound, int64, error) {
	var last int64
	err := d.db.QueryRowContext(ctx, "SELECT last_seq FROM roomserver_output_seqs WHERE partition_id = $1", partition).Scan(&last)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, 0, fmt.Errorf("select output sequence: %w", err)
	}
	out, err := d.outbound(ctx, `SELECT seq, room_id, partition_id, partition_seq, payload, event_nid FROM roomserver_outbox
		WHERE partition_id = $1 AND partition_seq > $2 ORDER BY partition_seq LIMIT $3`, partition, after, limit)
	return out, last, err
}

// Write implements storage.Database.
func (d *Database) Write(ctx context.Context, fn func(w storage.Writer) error) error {
	return d.db.WithTx(ctx, func(tx *sql.Tx) error {
		return fn(&writer{ctx: ctx, tx: tx, offsets: d.offsets, dialect: d.db.Dialect})
	})
}
