package sql

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/matrix-org/dendrite/pushserver/storage"
)

// queueSchema is the per-pusher queue of pushes to deliver. A pusher's rows share
// next_ts (when its head is due again); attempts count the head's failures.
const queueSchema = `
CREATE TABLE IF NOT EXISTS pushserver_push_queue (
	seq {serial},
	user_id TEXT NOT NULL,
	app_id TEXT NOT NULL,
	pushkey TEXT NOT NULL,
	event_id TEXT NOT NULL,
	room_id TEXT NOT NULL,
	actions TEXT NOT NULL,
	attempts INTEGER NOT NULL DEFAULT 0,
	enqueued_ts {bigint} NOT NULL,
	next_ts {bigint} NOT NULL
);
CREATE INDEX IF NOT EXISTS pushserver_push_queue_pusher ON pushserver_push_queue (user_id, app_id, pushkey, seq);
CREATE INDEX IF NOT EXISTS pushserver_push_queue_due ON pushserver_push_queue (next_ts);
`

// EnqueuePushes implements storage.Database.
func (d *Database) EnqueuePushes(ctx context.Context, tx *sql.Tx, ns []storage.Notification, badges []string) error {
	users := map[string]bool{}
	var ids []string
	for _, n := range ns {
		if !users[n.UserID] {
			users[n.UserID] = true
			ids = append(ids, n.UserID)
		}
	}
	for _, u := range badges {
		if !users[u] {
			users[u] = true
			ids = append(ids, u)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	pushers := map[string][]storage.PusherKey{}
	due := map[storage.PusherKey]int64{}
	for _, chunk := range chunks(ids) {
		if err := d.pushersOf(ctx, tx, chunk, pushers, due); err != nil {
			return err
		}
	}
	now := time.Now().UnixMilli()
	var queue []queueRow
	add := func(k storage.PusherKey, eventID, roomID string, actions json.RawMessage) {
		next, ok := due[k]
		if !ok {
			next = now
		}
		queue = append(queue, queueRow{k: k, eventID: eventID, roomID: roomID, actions: string(actions), next: next})
	}
	for _, n := range ns {
		for _, k := range pushers[n.UserID] {
			add(k, n.EventID, n.RoomID, n.Actions)
		}
	}
	for _, u := range badges {
		for _, k := range pushers[u] {
			add(k, "", "", json.RawMessage("[]"))
		}
	}
	return d.insertQueueRows(ctx, tx, queue, now)
}

// pushersOf adds the pushers of userIDs, one IN list, to pushers, and the next_ts of
// those with pushes queued to due: a push queued behind others waits as long as they do.
// A pusher's queued rows share next_ts, so its head's is read, one index lookup per
// pusher rather than a scan of every push queued (which a reader behind its gateways
// paid for each message).
func (d *Database) pushersOf(ctx context.Context, tx *sql.Tx, userIDs []string, pushers map[string][]storage.PusherKey,
	due map[storage.PusherKey]int64) error {
	q, args := d.db.Dialect.InList(`SELECT p.user_id, p.app_id, p.pushkey, (SELECT q.next_ts FROM pushserver_push_queue q
		WHERE q.user_id = p.user_id AND q.app_id = p.app_id AND q.pushkey = p.pushkey ORDER BY q.seq LIMIT 1)
		FROM pushserver_pushers p WHERE p.user_id IN ({ids})`, "{ids}", nil, userIDs)
	rows, err := tx.QueryContext(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("select pushers to push to: %w", err)
	}
	defer rows.Close() // nolint: errcheck // rows.Err below reports what matters
	for rows.Next() {
		var k storage.PusherKey
		var next sql.NullInt64
		if err := rows.Scan(&k.UserID, &k.AppID, &k.PushKey, &next); err != nil {
			return fmt.Errorf("scan pusher: %w", err)
		}
		pushers[k.UserID] = append(pushers[k.UserID], k)
		if next.Valid {
			due[k] = next.Int64
		}
	}
	return rows.Err()
}

// queueRow is one push to queue; next is its pusher's next_ts.
type queueRow struct {
	k                        storage.PusherKey
	eventID, roomID, actions string
	next                     int64
}

// queueRowsPerInsert is how many pushes one INSERT queues (9 parameters each).
const queueRowsPerInsert = 100

// insertQueueRows queues rows, a hundred per statement: a message in a room of a
// thousand members with a pusher each queues a thousand pushes.
func (d *Database) insertQueueRows(ctx context.Context, tx *sql.Tx, rows []queueRow, now int64) error {
	for len(rows) > 0 {
		chunk := rows[:min(len(rows), queueRowsPerInsert)]
		rows = rows[len(chunk):]
		args := make([]any, 0, 8*len(chunk))
		for _, r := range chunk {
			args = append(args, r.k.UserID, r.k.AppID, r.k.PushKey, r.eventID, r.roomID, r.actions, now, r.next)
		}
		q := `INSERT INTO pushserver_push_queue (user_id, app_id, pushkey, event_id, room_id, actions, enqueued_ts, next_ts) VALUES ` +
			d.db.Dialect.Rows(len(chunk), 8)
		if _, err := tx.ExecContext(ctx, q, args...); err != nil {
			return fmt.Errorf("queue pushes: %w", err)
		}
	}
	return nil
}

// DuePushers implements storage.Database. The due pushers are picked out of the queue
// first and joined with their pushers after: joining every queued push (thousands in a
// backlog) with its pusher's data before DISTINCT was the deliverer's costliest query.
func (d *Database) DuePushers(ctx context.Context, now int64) ([]storage.DuePusher, error) {
	rows, err := d.db.QueryContext(ctx, `SELECT q.user_id, q.app_id, q.pushkey, COALESCE(p.data, '') FROM
		(SELECT DISTINCT user_id, app_id, pushkey FROM pushserver_push_queue WHERE next_ts <= $1) q
		LEFT JOIN pushserver_pushers p ON p.user_id = q.user_id AND p.app_id = q.app_id AND p.pushkey = q.pushkey`, now)
	if err != nil {
		return nil, fmt.Errorf("select due pushers: %w", err)
	}
	defer rows.Close() // nolint: errcheck // read-only
	var out []storage.DuePusher
	for rows.Next() {
		var p storage.DuePusher
		var data string
		if err := rows.Scan(&p.Key.UserID, &p.Key.AppID, &p.Key.PushKey, &data); err != nil {
			return nil, fmt.Errorf("scan due pusher: %w", err)
		}
		var d struct {
			URL string `json:"url"`
		}
		if json.Unmarshal([]byte(data), &d) == nil {
			p.URL = d.URL
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// QueueHeads implements storage.Database.
func (d *Database) QueueHeads(ctx context.Context, k storage.PusherKey, now, after int64, limit int) ([]storage.QueuedPush, *storage.StoredPusher, error) {
	rows, err := d.db.QueryContext(ctx, `SELECT seq, event_id, room_id, actions, attempts, enqueued_ts, next_ts FROM pushserver_push_queue
		WHERE user_id = $1 AND app_id = $2 AND pushkey = $3 AND seq > $4 ORDER BY seq LIMIT $5`, k.UserID, k.AppID, k.PushKey, after, limit)
	if err != nil {
		return nil, nil, fmt.Errorf("select queue heads: %w", err)
	}
	defer rows.Close() // nolint: errcheck // rows.Err below reports what matters
	var heads []storage.QueuedPush
	for rows.Next() {
		p := storage.QueuedPush{ID: k}
		var actions string
		var next int64
		if err := rows.Scan(&p.Seq, &p.EventID, &p.RoomID, &actions, &p.Attempts, &p.EnqueuedTS, &next); err != nil {
			return nil, nil, fmt.Errorf("scan queue head: %w", err)
		}
		if len(heads) == 0 && next > now {
			return nil, nil, nil
		}
		p.Actions = json.RawMessage(actions)
		heads = append(heads, p)
	}
	if err := rows.Err(); err != nil || len(heads) == 0 {
		return nil, nil, err
	}
	pusher := storage.StoredPusher{UserID: k.UserID}
	var data string
	var created int64
	err = d.db.QueryRowContext(ctx, `SELECT app_id, pushkey, kind, app_display_name, device_display_name, profile_tag, lang, data,
		device_id, created_ts FROM pushserver_pushers WHERE user_id = $1 AND app_id = $2 AND pushkey = $3`, k.UserID, k.AppID, k.PushKey).
		Scan(&pusher.AppID, &pusher.PushKey, &pusher.Kind, &pusher.AppDisplayName, &pusher.DeviceDisplayName, &pusher.ProfileTag,
			&pusher.Lang, &data, &pusher.DeviceID, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil, d.RemovePusher(ctx, k)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("select pusher: %w", err)
	}
	pusher.Data, pusher.CreatedTS = json.RawMessage(data), created
	return heads, &pusher, nil
}

// Delivered implements storage.Database.
func (d *Database) Delivered(ctx context.Context, seqs []int64) error {
	return d.db.WithTx(ctx, func(tx *sql.Tx) error {
		for _, chunk := range chunks(seqs) {
			q, args := d.db.Dialect.InList(`DELETE FROM pushserver_push_queue WHERE seq IN ({seqs})`, "{seqs}", nil, chunk)
			if _, err := tx.ExecContext(ctx, q, args...); err != nil {
				return fmt.Errorf("dequeue push: %w", err)
			}
		}
		return nil
	})
}

// Postpone implements storage.Database.
func (d *Database) Postpone(ctx context.Context, k storage.PusherKey, seq int64, next int64) error {
	return d.db.WithTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `UPDATE pushserver_push_queue SET attempts = attempts + 1 WHERE seq = $1`, seq); err != nil {
			return fmt.Errorf("count push attempt: %w", err)
		}
		_, err := tx.ExecContext(ctx, `UPDATE pushserver_push_queue SET next_ts = $4 WHERE user_id = $1 AND app_id = $2 AND pushkey = $3`,
			k.UserID, k.AppID, k.PushKey, next)
		if err != nil {
			return fmt.Errorf("postpone pushes: %w", err)
		}
		return nil
	})
}

// RemovePusher implements storage.Database.
func (d *Database) RemovePusher(ctx context.Context, k storage.PusherKey) error {
	return d.db.WithTx(ctx, func(tx *sql.Tx) error { return removePusher(ctx, tx, k) })
}

func removePusher(ctx context.Context, tx *sql.Tx, k storage.PusherKey) error {
	for _, table := range []string{"pushserver_push_queue", "pushserver_pushers"} {
		_, err := tx.ExecContext(ctx, `DELETE FROM `+table+` WHERE user_id = $1 AND app_id = $2 AND pushkey = $3`, k.UserID, k.AppID, k.PushKey)
		if err != nil {
			return fmt.Errorf("delete pusher: %w", err)
		}
	}
	return nil
}

// DeleteDevicePushers implements storage.Database.
func (d *Database) DeleteDevicePushers(ctx context.Context, tx *sql.Tx, userID, deviceID string) error {
	rows, err := tx.QueryContext(ctx, `SELECT app_id, pushkey FROM pushserver_pushers WHERE user_id = $1 AND device_id = $2`, userID, deviceID)
	if err != nil {
		return fmt.Errorf("select device pushers: %w", err)
	}
	var keys []storage.PusherKey
	for rows.Next() {
		k := storage.PusherKey{UserID: userID}
		if err := rows.Scan(&k.AppID, &k.PushKey); err != nil {
			_ = rows.Close() // the scan error is the one to report
			return fmt.Errorf("scan device pusher: %w", err)
		}
		keys = append(keys, k)
	}
	if err := rows.Close(); err != nil {
		return err
	}
	for _, k := range keys {
		if err := removePusher(ctx, tx, k); err != nil {
			return err
		}
	}
	return nil
}

// UnreadTotal implements storage.Database.
func (d *Database) UnreadTotal(ctx context.Context, userID string) (int, error) {
	var n int
	err := d.db.QueryRowContext(ctx, `SELECT COALESCE(SUM(notifs), 0) FROM pushserver_unread WHERE user_id = $1`, userID).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count unread: %w", err)
	}
	return n, nil
}

// QueueDepth implements storage.Database.
func (d *Database) QueueDepth(ctx context.Context) (int, error) {
	var n int
	if err := d.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM pushserver_push_queue`).Scan(&n); err != nil {
		return 0, fmt.Errorf("count queued pushes: %w", err)
	}
	return n, nil
}

// DuePushes implements storage.Database.
func (d *Database) DuePushes(ctx context.Context, now int64) (int, error) {
	var n int
	if err := d.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM pushserver_push_queue WHERE next_ts <= $1`, now).Scan(&n); err != nil {
		return 0, fmt.Errorf("count due pushes: %w", err)
	}
	return n, nil
}
