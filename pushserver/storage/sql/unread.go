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

// unreadDelta is a change to one summary row: counts, and for pruned notifications the
// newest position among them.
type unreadDelta struct {
	notifs, highlights int64
	pos                int64
}

// deltas accumulates summary changes per row.
type deltas map[unreadKey]*unreadDelta

func (ds deltas) add(k unreadKey, highlight bool, pos int64) {
	d := ds[k]
	if d == nil {
		d = &unreadDelta{}
		ds[k] = d
	}
	d.notifs++
	if highlight {
		d.highlights++
	}
	d.pos = max(d.pos, pos)
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
	added := deltas{}
	for len(ns) > 0 {
		chunk := ns[:min(len(ns), notificationRows)]
		ns = ns[len(chunk):]
		args := make([]any, 0, 8*len(chunk))
		for _, n := range chunk {
			args = append(args, n.UserID, n.RoomID, n.EventID, n.ThreadID, compactActions(n.Actions), n.Highlight, n.Pos, n.TS)
		}
		q := `INSERT INTO pushserver_notifications (user_id, room_id, event_id, thread_id, actions, highlight, pos, ts) VALUES ` +
			d.db.Dialect.Rows(len(chunk), 8) +
			` ON CONFLICT (user_id, event_id) DO NOTHING RETURNING user_id, room_id, thread_id, highlight, pos, NOT is_read`
		if _, err := scanDeltas(ctx, tx, added, q, args...); err != nil {
			return fmt.Errorf("insert notifications: %w", err)
		}
	}
	return d.addUnread(ctx, tx, added)
}

// scanDeltas runs query, which returns user_id, room_id, thread_id, highlight, pos and
// whether to count it of notifications, adds those to count to ds and reports how many
// rows the query returned.
func scanDeltas(ctx context.Context, tx *sql.Tx, ds deltas, query string, args ...any) (int, error) {
	rows, err := tx.QueryContext(ctx, query, args...)
	if err != nil {
		return 0, err
	}
	defer rows.Close() // nolint: errcheck // the error that matters is rows.Err
	n := 0
	for rows.Next() {
		var k unreadKey
		var highlight, count bool
		var pos int64
		if err := rows.Scan(&k.userID, &k.roomID, &k.threadID, &highlight, &pos, &count); err != nil {
			return 0, err
		}
		n++
		if count {
			ds.add(k, highlight, pos)
		}
	}
	return n, rows.Err()
}

// addUnread adds ds to the summary's counts.
func (d *Database) addUnread(ctx context.Context, tx *sql.Tx, ds deltas) error {
	keys := ds.sortedKeys()
	for len(keys) > 0 {
		chunk := keys[:min(len(keys), notificationRows)]
		keys = keys[len(chunk):]
		args := make([]any, 0, 5*len(chunk))
		for _, k := range chunk {
			args = append(args, k.userID, k.roomID, k.threadID, ds[k].notifs, ds[k].highlights)
		}
		q := `INSERT INTO pushserver_unread (user_id, room_id, thread_id, notifs, highlights) VALUES ` + d.db.Dialect.Rows(len(chunk), 5) +
			` ON CONFLICT (user_id, room_id, thread_id) DO UPDATE SET notifs = pushserver_unread.notifs + excluded.notifs,
			highlights = pushserver_unread.highlights + excluded.highlights`
		if _, err := tx.ExecContext(ctx, q, args...); err != nil {
			return fmt.Errorf("count unread notifications: %w", err)
		}
	}
	return nil
}

// MarkRead implements storage.Database: the rows marked read leave the summary's counts,
// and so do the pruned unread notifications when pos is at or after the newest of them.
func (d *Database) MarkRead(ctx context.Context, tx *sql.Tx, userID, roomID, threadID string, pos int64) (bool, error) {
	where := ` WHERE user_id = $1 AND room_id = $2`
	args := []any{userID, roomID, pos}
	if threadID != "" {
		where += " AND thread_id = $4"
		args = append(args, threadID)
	}
	read := deltas{}
	_, err := scanDeltas(ctx, tx, read, `UPDATE pushserver_notifications SET is_read = TRUE`+where+` AND NOT is_read AND pos <= $3
		RETURNING user_id, room_id, thread_id, highlight, pos, is_read`, args...)
	if err != nil {
		return false, fmt.Errorf("mark notifications read: %w", err)
	}
	for _, k := range read.sortedKeys() {
		if _, err := tx.ExecContext(ctx, `UPDATE pushserver_unread SET notifs = notifs - $4, highlights = highlights - $5
			WHERE user_id = $1 AND room_id = $2 AND thread_id = $3`, k.userID, k.roomID, k.threadID, read[k].notifs, read[k].highlights); err != nil {
			return false, fmt.Errorf("uncount read notifications: %w", err)
		}
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

// PruneNotifications implements storage.Database. It reads up to c.Batch rows after
// `after` in ID order, deletes those older than their retention and moves the unread ones
// among them to the summary's pruned counts. IDs follow the order events were recorded,
// and so, nearly, their timestamps: the scan ends at the first row newer than
// c.NotifyBefore, so that a run reads the rows it deletes and the highlights it keeps,
// not the whole table.
func (d *Database) PruneNotifications(ctx context.Context, after int64, c storage.PruneCutoffs) (int64, int, bool, error) {
	var last int64
	var deleted int
	var done bool
	err := d.db.WithTx(ctx, func(tx *sql.Tx) error {
		var ids []int64
		var err error
		ids, last, done, err = pruneCandidates(ctx, tx, after, c)
		if err != nil || len(ids) == 0 {
			return err
		}
		// The DELETE checks the rows again and returns them as they are now: a receipt
		// may have marked some read since they were selected.
		q, args := d.db.Dialect.InList(`DELETE FROM pushserver_notifications WHERE id IN ({ids})
			AND ((ts < $1 AND NOT highlight) OR ts < $2) RETURNING user_id, room_id, thread_id, highlight, pos, NOT is_read`,
			"{ids}", []any{c.NotifyBefore, c.HighlightBefore}, ids)
		pruned := deltas{}
		if deleted, err = scanDeltas(ctx, tx, pruned, q, args...); err != nil {
			return err
		}
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

// pruneCandidates are the IDs of the rows after `after`, up to c.Batch of them and up to
// the first newer than c.NotifyBefore, that are older than their retention; last is the
// last ID read that is not newer, and done whether the scan ended.
func pruneCandidates(ctx context.Context, tx *sql.Tx, after int64, c storage.PruneCutoffs) (ids []int64, last int64, done bool, err error) {
	rows, err := tx.QueryContext(ctx, `SELECT id, ts, highlight FROM pushserver_notifications WHERE id > $1 ORDER BY id LIMIT $2`,
		after, c.Batch)
	if err != nil {
		return nil, 0, false, err
	}
	defer rows.Close() // nolint: errcheck // the error that matters is rows.Err
	last, read := after, 0
	for rows.Next() {
		var id, ts int64
		var highlight bool
		if err := rows.Scan(&id, &ts, &highlight); err != nil {
			return nil, 0, false, err
		}
		read++
		if ts >= c.NotifyBefore {
			return ids, last, true, nil
		}
		last = id
		if !highlight || ts < c.HighlightBefore {
			ids = append(ids, id)
		}
	}
	return ids, last, read < c.Batch, rows.Err()
}
