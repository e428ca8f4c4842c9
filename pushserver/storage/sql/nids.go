package sql

import (
	"context"
	"database/sql"
	"fmt"
)

// slimSchema stores a notification as numbers. It was a row of text per notified member
// (user, room and event IDs, repeated for each of a room's members, in the row and again
// in two of its three indexes: about 340 bytes a row on disk); now:
//   - the event is its position, pos, the key of pushserver_events, which holds the
//     event's ID and, since it is the same for every member notified, its timestamp (ts);
//   - the user and the room are numbers (nid) that pushserver_nids gives their IDs;
//   - the primary key is (pos, user_nid), in the order rows are added and pruned; on
//     SQLite the rows live in that key's B-tree (no rowid);
//   - pushserver_notifications_user (user_nid, pos) lists a user's notifications,
//     newest first (GET /notifications);
//   - pushserver_notifications_unread (user_nid, room_nid, pos) holds only the unread
//     rows, which receipts mark read (MarkRead).
//   - pushserver_notifications_highlights (user_nid, pos) holds only the highlights
//     (GET /notifications?only=highlight; a few in a hundred rows), which were found by
//     reading all of the user's notifications.
//
// An empty thread_id (the main timeline) and actions ("" for the plain ["notify"]) take
// a byte each or nothing, as a NULL would. The event's room ID is no longer kept in
// pushserver_events: nothing read it. The migration moves every row across: the event's
// position is looked up by its ID (an event recorded in a notification only gets one),
// its timestamp comes from its notifications.
const slimSchema = `
CREATE TABLE IF NOT EXISTS pushserver_nids (
	nid {serial},
	id TEXT NOT NULL UNIQUE
);
INSERT INTO pushserver_nids (id) SELECT user_id FROM pushserver_notifications UNION SELECT room_id FROM pushserver_notifications;
INSERT INTO pushserver_events (event_id, room_id)
	SELECT event_id, MIN(room_id) FROM pushserver_notifications n
	WHERE NOT EXISTS (SELECT 1 FROM pushserver_events e WHERE e.event_id = n.event_id)
	GROUP BY event_id ORDER BY MIN(id);
ALTER TABLE pushserver_events ADD COLUMN ts {bigint} NOT NULL DEFAULT 0;
UPDATE pushserver_events SET ts = m.ts FROM (SELECT event_id, MAX(ts) AS ts FROM pushserver_notifications GROUP BY event_id) m
	WHERE m.event_id = pushserver_events.event_id;
CREATE TABLE pushserver_notifications_slim (
	pos {bigint} NOT NULL,
	user_nid INTEGER NOT NULL,
	room_nid INTEGER NOT NULL,
	highlight BOOLEAN NOT NULL,
	is_read BOOLEAN NOT NULL DEFAULT FALSE,
	thread_id TEXT NOT NULL,
	actions TEXT NOT NULL,
	CONSTRAINT pushserver_notifications_order PRIMARY KEY (pos, user_nid)
) {without_rowid};
INSERT INTO pushserver_notifications_slim (pos, user_nid, room_nid, highlight, is_read, thread_id, actions)
	SELECT e.pos, u.nid, r.nid, n.highlight, n.is_read, n.thread_id, n.actions FROM pushserver_notifications n
	JOIN pushserver_events e ON e.event_id = n.event_id
	JOIN pushserver_nids u ON u.id = n.user_id
	JOIN pushserver_nids r ON r.id = n.room_id
	ORDER BY e.pos, u.nid;
DROP TABLE pushserver_notifications;
ALTER TABLE pushserver_notifications_slim RENAME TO pushserver_notifications;
CREATE INDEX pushserver_notifications_user ON pushserver_notifications (user_nid, pos);
CREATE INDEX pushserver_notifications_unread ON pushserver_notifications (user_nid, room_nid, pos) WHERE NOT is_read;
CREATE INDEX pushserver_notifications_highlights ON pushserver_notifications (user_nid, pos) WHERE highlight;
ALTER TABLE pushserver_events DROP COLUMN room_id;
`

// nids are the numbers pushserver_nids gives ids (user and room IDs, each once),
// numbering those it has none for.
func (d *Database) nids(ctx context.Context, tx *sql.Tx, ids []string) (map[string]int64, error) {
	out, err := d.knownNIDs(ctx, tx, ids)
	if err != nil {
		return nil, err
	}
	var missing []string
	for _, id := range ids {
		if _, ok := out[id]; !ok {
			missing = append(missing, id)
		}
	}
	for _, chunk := range chunks(missing) {
		args := make([]any, len(chunk))
		for i, id := range chunk {
			args[i] = id
		}
		q := `INSERT INTO pushserver_nids (id) VALUES ` + d.db.Dialect.Rows(len(chunk), 1) + ` ON CONFLICT (id) DO NOTHING`
		if _, err := tx.ExecContext(ctx, q, args...); err != nil {
			return nil, fmt.Errorf("number IDs: %w", err)
		}
		if err := d.readNIDs(ctx, tx, chunk, out); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// knownNIDs are the numbers of those of ids that have one.
func (d *Database) knownNIDs(ctx context.Context, tx *sql.Tx, ids []string) (map[string]int64, error) {
	out := make(map[string]int64, len(ids))
	for _, chunk := range chunks(ids) {
		if err := d.readNIDs(ctx, tx, chunk, out); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// readNIDs adds the numbers of ids, one IN list, to out.
func (d *Database) readNIDs(ctx context.Context, tx *sql.Tx, ids []string, out map[string]int64) error {
	q, args := d.db.Dialect.InList(`SELECT nid, id FROM pushserver_nids WHERE id IN ({ids})`, "{ids}", nil, ids)
	return scanNIDs(ctx, tx, q, args, func(nid int64, id string) { out[id] = nid })
}

// names are the IDs of nids.
func (d *Database) names(ctx context.Context, tx *sql.Tx, nids []int64) (map[int64]string, error) {
	out := make(map[int64]string, len(nids))
	for _, chunk := range chunks(nids) {
		q, args := d.db.Dialect.InList(`SELECT nid, id FROM pushserver_nids WHERE nid IN ({nids})`, "{nids}", nil, chunk)
		if err := scanNIDs(ctx, tx, q, args, func(nid int64, id string) { out[nid] = id }); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// scanNIDs runs q, which selects nid and id of pushserver_nids, and passes each row to add.
func scanNIDs(ctx context.Context, tx *sql.Tx, q string, args []any, add func(nid int64, id string)) error {
	rows, err := tx.QueryContext(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("select numbered IDs: %w", err)
	}
	defer rows.Close() // nolint: errcheck // read-only
	for rows.Next() {
		var nid int64
		var id string
		if err := rows.Scan(&nid, &id); err != nil {
			return fmt.Errorf("scan numbered ID: %w", err)
		}
		add(nid, id)
	}
	return rows.Err()
}
