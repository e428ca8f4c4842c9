package sql

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/pushserver/api"
	"github.com/matrix-org/dendrite/pushserver/storage"
)

// unreadSchema adds the unread summary: per user, room and thread, how many of the
// notifications recorded are unread and how many of those highlight, kept up to date in
// the transactions that record notifications and mark them read, so that counting needs
// no notification rows and old rows can be pruned (PruneNotifications). Unread
// notifications whose rows were pruned stay in the counts and are remembered apart
// (pruned_*, with the newest position among them) until a receipt at or after that
// position clears them. The migration fills the summary from the rows there are, and
// stops storing the plain ["notify"] actions of most notifications ("" stands for them).
const unreadSchema = `
CREATE TABLE IF NOT EXISTS pushserver_unread (
	user_id TEXT NOT NULL,
	room_id TEXT NOT NULL,
	thread_id TEXT NOT NULL,
	notifs {bigint} NOT NULL,
	highlights {bigint} NOT NULL,
	pruned_notifs {bigint} NOT NULL DEFAULT 0,
	pruned_highlights {bigint} NOT NULL DEFAULT 0,
	pruned_pos {bigint} NOT NULL DEFAULT 0,
	PRIMARY KEY (user_id, room_id, thread_id)
);
INSERT INTO pushserver_unread (user_id, room_id, thread_id, notifs, highlights)
	SELECT user_id, room_id, thread_id, COUNT(*), SUM(CASE WHEN highlight THEN 1 ELSE 0 END)
	FROM pushserver_notifications WHERE NOT is_read GROUP BY user_id, room_id, thread_id;
UPDATE pushserver_notifications SET actions = '' WHERE actions = '["notify"]';
`

// unreadAfterSchema drops the index of unread notifications, (user_nid, room_nid, pos)
// WHERE NOT is_read: every notification went into it as well as into the table and
// pushserver_notifications_user, at a place of its own for each member notified, and it
// held every notification nobody had read (a user who never reads a room keeps them all).
// MarkRead reads pushserver_notifications_user instead, from unread_after on: each summary
// row keeps a position at or after which all of its unread notifications come (a lower
// bound: 0 for the rows there are, then the position before the first notification the row
// counts, raised to a receipt's position when the receipt marks some read).
const unreadAfterSchema = `
DROP INDEX pushserver_notifications_unread;
ALTER TABLE pushserver_unread ADD COLUMN unread_after {bigint} NOT NULL DEFAULT 0;
`

// plainActions are the actions of most notifications (the default message rules),
// stored as "".
const plainActions = `["notify"]`

// compactActions is how actions are stored.
func compactActions(actions json.RawMessage) string {
	if string(actions) == plainActions {
		return ""
	}
	return string(actions)
}

// expandActions reverses compactActions.
func expandActions(stored string) json.RawMessage {
	if stored == "" {
		return json.RawMessage(plainActions)
	}
	return json.RawMessage(stored)
}

// unreadKey names one row of the unread summary.
type unreadKey struct {
	userID, roomID, threadID string
}

// unreadDelta is a change to one summary row: counts, and the oldest and newest positions
// among the notifications counted.
type unreadDelta struct {
	notifs, highlights int64
	first, pos         int64
}

// deltas accumulates summary changes per row.
type deltas map[unreadKey]*unreadDelta

// add adds the rows that count, their users and rooms named by names.
func (ds deltas) add(rows []changedRow, names map[int64]string) {
	for _, r := range rows {
		if !r.count {
			continue
		}
		k := unreadKey{userID: names[r.userNID], roomID: names[r.roomNID], threadID: r.threadID}
		d := ds[k]
		if d == nil {
			d = &unreadDelta{first: r.pos}
			ds[k] = d
		}
		d.first = min(d.first, r.pos)
		d.notifs++
		if r.highlight {
			d.highlights++
		}
		d.pos = max(d.pos, r.pos)
	}
}

// sortedKeys orders the rows so that concurrent transactions lock them in one order.
func (ds deltas) sortedKeys() []unreadKey {
	keys := make([]unreadKey, 0, len(ds))
	for k := range ds {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b unreadKey) int {
		return cmp.Or(strings.Compare(a.userID, b.userID), strings.Compare(a.roomID, b.roomID), strings.Compare(a.threadID, b.threadID))
	})
	return keys
}

// notificationRows is how many notifications (or summary rows) one INSERT writes: a room
// of a thousand members records ten statements per event, not a thousand.
const notificationRows = 100

// AddNotifications implements storage.Database. The summary counts only the rows that
// were inserted, so recording an event twice counts it once.
func (d *Database) AddNotifications(ctx context.Context, tx *sql.Tx, ns []storage.Notification) error {
	var ids []string
	seen := map[string]bool{}
	for _, n := range ns {
		for _, id := range []string{n.UserID, n.RoomID} {
			if !seen[id] {
				seen[id] = true
				ids = append(ids, id)
			}
		}
	}
	nids, err := d.nids(ctx, tx, ids)
	if err != nil {
		return err
	}
	names := make(map[int64]string, len(nids))
	for id, nid := range nids {
		names[nid] = id
	}
	added := deltas{}
	for len(ns) > 0 {
		chunk := ns[:min(len(ns), notificationRows)]
		ns = ns[len(chunk):]
		args := make([]any, 0, 6*len(chunk))
		for _, n := range chunk {
			args = append(args, n.Pos, nids[n.UserID], nids[n.RoomID], n.Highlight, n.ThreadID, compactActions(n.Actions))
		}
		q := `INSERT INTO pushserver_notifications (pos, user_nid, room_nid, highlight, thread_id, actions) VALUES ` +
			d.db.Dialect.Rows(len(chunk), 6) + ` ON CONFLICT (pos, user_nid) DO NOTHING RETURNING ` + changedColumns("NOT is_read")
		rows, err := scanChanged(ctx, tx, q, args...)
		if err != nil {
			return fmt.Errorf("insert notifications: %w", err)
		}
		added.add(rows, names)
	}
	return d.addUnread(ctx, tx, added)
}

// changedRow is a notification inserted, marked read or deleted, as its statement
// returns it (changedColumns); count is whether it counts as unread.
type changedRow struct {
	userNID, roomNID int64
	threadID         string
	highlight        bool
	pos              int64
	count            bool
}

// changedColumns are the columns a statement returns for scanChanged, count the
// expression of whether a row counts.
func changedColumns(count string) string {
	return "user_nid, room_nid, thread_id, highlight, pos, " + count
}

// scanChanged runs query, which returns changedColumns.
func scanChanged(ctx context.Context, tx *sql.Tx, query string, args ...any) ([]changedRow, error) {
	rows, err := tx.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close() // nolint: errcheck // the error that matters is rows.Err
	var out []changedRow
	for rows.Next() {
		var r changedRow
		if err := rows.Scan(&r.userNID, &r.roomNID, &r.threadID, &r.highlight, &r.pos, &r.count); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// addUnread adds ds to the summary's counts.
func (d *Database) addUnread(ctx context.Context, tx *sql.Tx, ds deltas) error {
	keys := ds.sortedKeys()
	for len(keys) > 0 {
		chunk := keys[:min(len(keys), notificationRows)]
		keys = keys[len(chunk):]
		args := make([]any, 0, 6*len(chunk))
		for _, k := range chunk {
			args = append(args, k.userID, k.roomID, k.threadID, ds[k].notifs, ds[k].highlights, ds[k].first-1)
		}
		q := `INSERT INTO pushserver_unread (user_id, room_id, thread_id, notifs, highlights, unread_after) VALUES ` + d.db.Dialect.Rows(len(chunk), 6) +
			` ON CONFLICT (user_id, room_id, thread_id) DO UPDATE SET notifs = pushserver_unread.notifs + excluded.notifs,
			highlights = pushserver_unread.highlights + excluded.highlights,
			unread_after = CASE WHEN excluded.unread_after < pushserver_unread.unread_after THEN excluded.unread_after ELSE pushserver_unread.unread_after END`
		if _, err := tx.ExecContext(ctx, q, args...); err != nil {
			return fmt.Errorf("count unread notifications: %w", err)
		}
	}
	return nil
}

// MarkRead implements storage.Database: the rows marked read leave the summary's counts,
// and so do the pruned unread notifications when pos is at or after the newest of them.
func (d *Database) MarkRead(ctx context.Context, tx *sql.Tx, userID, roomID, threadID string, pos int64) (bool, error) {
	read := deltas{}
	after, err := d.unreadAfter(ctx, tx, userID, roomID, threadID)
	if err != nil {
		return false, err
	}
	if after.Valid && after.Int64 < pos {
		nids, err := d.knownNIDs(ctx, tx, []string{userID, roomID})
		if err != nil {
			return false, err
		}
		if len(nids) == 2 {
			args := []any{nids[userID], nids[roomID], pos, after.Int64}
			if threadID != "" {
				args = append(args, threadID)
			}
			rows, err := scanChanged(ctx, tx, markReadSQL(threadID != ""), args...)
			if err != nil {
				return false, fmt.Errorf("mark notifications read: %w", err)
			}
			read.add(rows, map[int64]string{nids[userID]: userID, nids[roomID]: roomID})
		}
	}
	for _, k := range read.sortedKeys() {
		if _, err := tx.ExecContext(ctx, `UPDATE pushserver_unread SET notifs = notifs - $4, highlights = highlights - $5,
			unread_after = CASE WHEN unread_after < $6 THEN $6 ELSE unread_after END
			WHERE user_id = $1 AND room_id = $2 AND thread_id = $3`, k.userID, k.roomID, k.threadID, read[k].notifs, read[k].highlights, pos); err != nil {
			return false, fmt.Errorf("uncount read notifications: %w", err)
		}
	}
	where := ` WHERE user_id = $1 AND room_id = $2`
	args := []any{userID, roomID, pos}
	if threadID != "" {
		where += " AND thread_id = $4"
		args = append(args, threadID)
	}
	res, err := tx.ExecContext(ctx, `UPDATE pushserver_unread SET notifs = notifs - pruned_notifs, highlights = highlights - pruned_highlights,
		pruned_notifs = 0, pruned_highlights = 0, pruned_pos = 0`+where+` AND pruned_notifs > 0 AND pruned_pos <= $3`, args...)
	if err != nil {
		return false, fmt.Errorf("uncount pruned notifications: %w", err)
	}
	pruned, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("uncount pruned notifications: %w", err)
	}
	if len(read) == 0 && pruned == 0 {
		return false, nil
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM pushserver_unread WHERE user_id = $1 AND room_id = $2 AND notifs <= 0`,
		userID, roomID); err != nil {
		return false, fmt.Errorf("delete read summaries: %w", err)
	}
	return true, nil
}

// unreadAfter is the position after which the user's unread notifications in the room
// (in the thread, if threadID is not "") all come, as the summary keeps it; not valid when
// none of them is stored (read, or pruned).
func (d *Database) unreadAfter(ctx context.Context, tx *sql.Tx, userID, roomID, threadID string) (sql.NullInt64, error) {
	q := `SELECT MIN(unread_after) FROM pushserver_unread WHERE user_id = $1 AND room_id = $2 AND notifs > pruned_notifs`
	args := []any{userID, roomID}
	if threadID != "" {
		q += " AND thread_id = $3"
		args = append(args, threadID)
	}
	var after sql.NullInt64
	if err := tx.QueryRowContext(ctx, q, args...).Scan(&after); err != nil {
		return after, fmt.Errorf("select unread notifications' start: %w", err)
	}
	return after, nil
}

// markReadSQL is the statement that marks notifications read, whose parameters are the
// user's and the room's numbers, the position, the position after which the unread ones
// all come (unreadAfter) and, when threaded, the thread ID. It reads the user's
// notifications of every room between the two positions (pushserver_notifications_user).
func markReadSQL(threaded bool) string {
	q := `UPDATE pushserver_notifications SET is_read = TRUE WHERE user_nid = $1 AND pos > $4 AND pos <= $3 AND room_nid = $2 AND NOT is_read`
	if threaded {
		q += " AND thread_id = $5"
	}
	return q + " RETURNING " + changedColumns("is_read")
}

// UnreadCounts implements storage.Database.
func (d *Database) UnreadCounts(ctx context.Context, tx *sql.Tx, roomID string, userIDs []string) (map[string]map[string]api.Counts, error) {
	out := make(map[string]map[string]api.Counts, len(userIDs))
	for _, u := range userIDs {
		out[u] = map[string]api.Counts{}
	}
	for _, ids := range chunks(userIDs) {
		if err := d.unreadCounts(ctx, tx, roomID, ids, out); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// unreadCounts adds the counts of userIDs, one IN list, to out.
func (d *Database) unreadCounts(ctx context.Context, tx *sql.Tx, roomID string, userIDs []string, out map[string]map[string]api.Counts) error {
	q, args := d.db.Dialect.InList(`SELECT user_id, thread_id, notifs, highlights FROM pushserver_unread
		WHERE room_id = $1 AND notifs > 0 AND user_id IN ({ids})`, "{ids}", []any{roomID}, userIDs)
	rows, err := sqlutil.Conn(d.db, tx).QueryContext(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("select unread counts: %w", err)
	}
	defer rows.Close() // nolint: errcheck // read-only
	for rows.Next() {
		var userID, threadID string
		var c api.Counts
		if err := rows.Scan(&userID, &threadID, &c.NotificationCount, &c.HighlightCount); err != nil {
			return fmt.Errorf("scan unread counts: %w", err)
		}
		out[userID][threadID] = c
	}
	return rows.Err()
}

// PruneNotifications implements storage.Database. It reads up to c.Batch rows with a
// position after `after`, in position order (the primary key's), up to the first whose
// event is newer than c.NotifyBefore, and deletes, among the events it read whole, the
// notifications older than their retention, moving the unread ones among them to the
// summary's pruned counts. Positions follow the order events were recorded, and so,
// nearly, their timestamps: a run reads the rows it deletes and the highlights it keeps,
// not the whole table.
func (d *Database) PruneNotifications(ctx context.Context, after int64, c storage.PruneCutoffs) (int64, int, bool, error) {
	var last int64
	var deleted int
	var done bool
	err := d.db.WithTx(ctx, func(tx *sql.Tx) error {
		var err error
		last, done, err = pruneRange(ctx, tx, after, c)
		if err != nil || last == after {
			return err
		}
		rows, err := scanChanged(ctx, tx, pruneSQL, after, last, c.NotifyBefore, c.HighlightBefore)
		if err != nil {
			return err
		}
		deleted = len(rows)
		seen := map[int64]bool{}
		var nids []int64
		for _, r := range rows {
			for _, nid := range []int64{r.userNID, r.roomNID} {
				if r.count && !seen[nid] {
					seen[nid] = true
					nids = append(nids, nid)
				}
			}
		}
		names, err := d.names(ctx, tx, nids)
		if err != nil {
			return err
		}
		pruned := deltas{}
		pruned.add(rows, names)
		for _, k := range pruned.sortedKeys() {
			p := pruned[k]
			if _, err := tx.ExecContext(ctx, `UPDATE pushserver_unread SET pruned_notifs = pruned_notifs + $4,
				pruned_highlights = pruned_highlights + $5, pruned_pos = CASE WHEN pruned_pos > $6 THEN pruned_pos ELSE $6 END
				WHERE user_id = $1 AND room_id = $2 AND thread_id = $3`, k.userID, k.roomID, k.threadID, p.notifs, p.highlights, p.pos); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, 0, false, fmt.Errorf("prune notifications: %w", err)
	}
	return last, deleted, done, nil
}

// pruneSQL deletes the notifications with a position in ($1, $2] older than their
// retention: their event older than $3, or than $4 for highlights.
var pruneSQL = `DELETE FROM pushserver_notifications WHERE pos > $1 AND pos <= $2
	AND (SELECT ts FROM pushserver_events e WHERE e.pos = pushserver_notifications.pos) < CASE WHEN highlight THEN CAST($4 AS BIGINT) ELSE CAST($3 AS BIGINT) END
	RETURNING ` + changedColumns("NOT is_read")

// pruneScanSQL reads up to $2 notifications' positions after $1, and their events'
// timestamps. The timestamp is a subquery, not a join: joined, SQLite read
// pushserver_events from $1 to the end and sorted before the LIMIT.
const pruneScanSQL = `SELECT pos, (SELECT ts FROM pushserver_events e WHERE e.pos = n.pos)
	FROM pushserver_notifications n WHERE pos > $1 ORDER BY pos LIMIT $2`

// pruneRange reads up to c.Batch notifications after position `after`, in position
// order, up to the first whose event is newer than c.NotifyBefore, and returns the last
// position of which it read every row (a batch filled by one event's rows takes that
// event whole), and done when the scan ended: at a newer event or the table's end.
func pruneRange(ctx context.Context, tx *sql.Tx, after int64, c storage.PruneCutoffs) (last int64, done bool, err error) {
	rows, err := tx.QueryContext(ctx, pruneScanSQL, after, c.Batch)
	if err != nil {
		return 0, false, err
	}
	defer rows.Close() // nolint: errcheck // the error that matters is rows.Err
	last, read := after, 0
	var cur int64
	for rows.Next() {
		var pos, ts int64
		if err := rows.Scan(&pos, &ts); err != nil {
			return 0, false, err
		}
		read++
		if pos != cur {
			if cur != 0 {
				last = cur
			}
			cur = pos
		}
		if ts >= c.NotifyBefore {
			return last, true, nil
		}
	}
	if err := rows.Err(); err != nil {
		return 0, false, err
	}
	if read < c.Batch || last == after {
		last = max(last, cur)
	}
	return last, read < c.Batch, nil
}
