// Package sql implements the search reader's storage.Database for SQLite and PostgreSQL:
// one events table written once for both engines, and the full-text index (text.go), the
// only part that differs.
package sql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/searchapi/storage"
)

// Options choose how text is split into index terms. Changing them later affects only
// what is indexed afterwards (PostgreSQL) or nothing (SQLite, whose table keeps the
// tokenizer it was created with) until the index is rebuilt.
type Options struct {
	// TextSearchConfig is PostgreSQL's text search configuration ("simple": no stemming,
	// no stop words, for every language).
	TextSearchConfig string
	// Tokenizer is SQLite FTS5's tokenizer ("unicode61 remove_diacritics 2").
	Tokenizer string
}

const eventsSchema = `
CREATE TABLE IF NOT EXISTS searchapi_events (
	id {serial},
	event_id TEXT NOT NULL UNIQUE,
	room_id TEXT NOT NULL,
	sender TEXT NOT NULL,
	type TEXT NOT NULL,
	origin_server_ts {bigint} NOT NULL,
	room_pos {bigint} NOT NULL,
	key TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS searchapi_events_room_pos ON searchapi_events (room_id, room_pos);
`

// Database is the SQL search store.
type Database struct {
	db   *sqlutil.DB
	text *textIndex
}

var _ storage.Database = (*Database)(nil)

// Open migrates the schema and returns the store.
func Open(ctx context.Context, db *sqlutil.DB, o Options) (*Database, error) {
	text, err := newTextIndex(db.Engine(), o)
	if err != nil {
		return nil, err
	}
	migrations := []sqlutil.Migration{{Version: 1, SQL: eventsSchema}, {Version: 2, Up: func(ctx context.Context, tx *sql.Tx, _ sqlutil.Dialect) error {
		for _, stmt := range text.create {
			if _, err := tx.ExecContext(ctx, stmt); err != nil {
				return err
			}
		}
		return nil
	}}}
	if err := sqlutil.Migrate(ctx, db, "searchapi", migrations); err != nil {
		return nil, fmt.Errorf("migrate searchapi schema: %w", err)
	}
	return &Database{db: db, text: text}, nil
}

// StoreEvents implements storage.Database.
func (d *Database) StoreEvents(ctx context.Context, tx *sql.Tx, evs []storage.Event) error {
	for _, ev := range evs {
		var id int64
		err := tx.QueryRowContext(ctx, `INSERT INTO searchapi_events (event_id, room_id, sender, type, origin_server_ts, room_pos, key)
			VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (event_id) DO NOTHING RETURNING id`,
			ev.EventID, ev.RoomID, ev.Sender, ev.Type, ev.OriginServerTS, ev.RoomPos, ev.Key).Scan(&id)
		if errors.Is(err, sql.ErrNoRows) {
			continue
		}
		if err != nil {
			return fmt.Errorf("store event: %w", err)
		}
		if ev.Text == "" {
			continue
		}
		if _, err = tx.ExecContext(ctx, d.text.insert, id, ev.Text); err != nil {
			return fmt.Errorf("index event text: %w", err)
		}
	}
	return nil
}

// LowestPos implements storage.Database.
func (d *Database) LowestPos(ctx context.Context, tx *sql.Tx, roomID string) (int64, error) {
	var pos sql.NullInt64
	if err := tx.QueryRowContext(ctx, "SELECT MIN(room_pos) FROM searchapi_events WHERE room_id = $1", roomID).Scan(&pos); err != nil {
		return 0, fmt.Errorf("select lowest room position: %w", err)
	}
	return pos.Int64, nil
}

// Redact implements storage.Database.
func (d *Database) Redact(ctx context.Context, tx *sql.Tx, eventID string) error {
	var id int64
	err := tx.QueryRowContext(ctx, `UPDATE searchapi_events SET key = '' WHERE event_id = $1 RETURNING id`, eventID).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("redact event: %w", err)
	}
	if _, err = tx.ExecContext(ctx, d.text.delete, id); err != nil {
		return fmt.Errorf("remove redacted text: %w", err)
	}
	return nil
}

// Window is how many matches a search ranks and counts at most: the newest ones. A word
// found in most messages would otherwise rank every one of them for each page.
const Window = 10000

// match is the common table expression "m" of the matches passing q's filters (see
// textIndex), with its arguments; the query text is $1.
func (d *Database) match(q *storage.Query) (string, []any, error) {
	if len(q.Words) == 0 {
		return "", nil, storage.ErrBadQuery
	}
	args := []any{d.text.query(q.Words)}
	filters, args := d.db.Dialect.InList("e.room_id IN ({l})", "{l}", args, q.Rooms)
	for _, f := range []struct {
		sql  string
		list []string
	}{{"e.key IN ({l})", q.Keys}, {"e.sender IN ({l})", q.Senders}, {"e.sender NOT IN ({l})", q.NotSenders}, {"e.type IN ({l})", q.Types}} {
		if len(f.list) == 0 {
			continue
		}
		var cond string
		cond, args = d.db.Dialect.InList(f.sql, "{l}", args, f.list)
		filters += " AND " + cond
	}
	r := strings.NewReplacer("{filters}", filters, "{window}", strconv.Itoa(Window))
	return r.Replace(d.text.match), args, nil
}

// Search implements storage.Database.
func (d *Database) Search(ctx context.Context, q *storage.Query) ([]storage.Result, error) {
	match, args, err := d.match(q)
	if err != nil {
		return nil, err
	}
	var b strings.Builder
	b.WriteString(match + ` SELECT e.id, e.event_id, e.room_id, e.sender, e.type, e.origin_server_ts, e.room_pos, e.key, m.rank
		FROM m CROSS JOIN searchapi_events e WHERE e.id = m.id`)
	if q.After != nil {
		n, id := "$"+strconv.Itoa(len(args)+1), "$"+strconv.Itoa(len(args)+2)
		if q.Order == storage.OrderRecent {
			b.WriteString(" AND (e.origin_server_ts < " + n + " OR (e.origin_server_ts = " + n + " AND e.id < " + id + "))")
			args = append(args, q.After.TS, q.After.ID)
		} else {
			b.WriteString(" AND (m.rank < " + n + " OR (m.rank = " + n + " AND e.id < " + id + "))")
			args = append(args, q.After.Rank, q.After.ID)
		}
	}
	if q.Order == storage.OrderRecent {
		b.WriteString(" ORDER BY e.origin_server_ts DESC, e.id DESC")
	} else {
		b.WriteString(" ORDER BY m.rank DESC, e.id DESC")
	}
	args = append(args, q.Limit)
	b.WriteString(" LIMIT $" + strconv.Itoa(len(args)))
	rows, err := d.db.QueryContext(ctx, b.String(), args...)
	if err != nil {
		return nil, fmt.Errorf("search: %w", err)
	}
	defer rows.Close() // nolint: errcheck // read-only
	var out []storage.Result
	for rows.Next() {
		var r storage.Result
		if err := rows.Scan(&r.Cursor.ID, &r.EventID, &r.RoomID, &r.Sender, &r.Type, &r.OriginServerTS, &r.RoomPos, &r.Key, &r.Rank); err != nil {
			return nil, fmt.Errorf("scan search result: %w", err)
		}
		r.Cursor.Rank, r.Cursor.TS = r.Rank, r.OriginServerTS
		out = append(out, r)
	}
	return out, rows.Err()
}

// Count implements storage.Database: at most Window.
func (d *Database) Count(ctx context.Context, q *storage.Query) (int, error) {
	match, args, err := d.match(q)
	if err != nil {
		return 0, err
	}
	var n int
	if err := d.db.QueryRowContext(ctx, match+" SELECT COUNT(*) FROM m", args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("count search results: %w", err)
	}
	return n, nil
}

// Around implements storage.Database.
func (d *Database) Around(ctx context.Context, roomID string, pos int64, before, after int) ([]string, []string, error) {
	var out [2][]string
	for i, q := range []struct {
		sql   string
		limit int
	}{
		{`SELECT event_id FROM searchapi_events WHERE room_id = $1 AND room_pos < $2 ORDER BY room_pos DESC LIMIT $3`, before},
		{`SELECT event_id FROM searchapi_events WHERE room_id = $1 AND room_pos > $2 ORDER BY room_pos LIMIT $3`, after},
	} {
		if q.limit <= 0 {
			continue
		}
		rows, err := d.db.QueryContext(ctx, q.sql, roomID, pos, q.limit)
		if err != nil {
			return nil, nil, fmt.Errorf("select context: %w", err)
		}
		if out[i], err = sqlutil.Column[string](rows); err != nil {
			return nil, nil, fmt.Errorf("select context: %w", err)
		}
	}
	return out[0], out[1], nil
}
