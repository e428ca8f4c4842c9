package sql

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/syncapi/storage"
)

// syncapi_relations holds one row per stored event whose content has an m.relates_to with
// a rel_type and an event_id (threads, edits, references, annotations...): the index behind
// /relations, /threads and the bundled aggregations. A redacted event loses its row, as its
// redacted content loses m.relates_to.
const relationsSchema = `
CREATE TABLE IF NOT EXISTS syncapi_relations (
	event_id TEXT PRIMARY KEY,
	room_id TEXT NOT NULL,
	relates_to TEXT NOT NULL,
	rel_type TEXT NOT NULL,
	event_type TEXT NOT NULL,
	sender TEXT NOT NULL,
	position {bigint} NOT NULL
);
CREATE INDEX IF NOT EXISTS syncapi_relations_parent ON syncapi_relations (relates_to, rel_type, position);
CREATE INDEX IF NOT EXISTS syncapi_relations_room ON syncapi_relations (room_id, rel_type, position);
`

// migrateRelations creates the relations table and fills it from the events stored.
func migrateRelations(ctx context.Context, tx *sql.Tx, d sqlutil.Dialect) error {
	for _, stmt := range strings.Split(d.Schema(relationsSchema), ";") {
		if strings.TrimSpace(stmt) == "" {
			continue
		}
		if _, err := tx.ExecContext(ctx, stmt); err != nil {
			return err
		}
	}
	rows, err := tx.QueryContext(ctx, "SELECT position, room_id, event_id, type, sender, event_json FROM syncapi_events WHERE redacted = FALSE AND event_json LIKE '%m.relates_to%'")
	if err != nil {
		return err
	}
	type stored struct {
		pos                          int64
		room, id, typ, sender, event string
	}
	var evs []stored
	for rows.Next() {
		var s stored
		if err = rows.Scan(&s.pos, &s.room, &s.id, &s.typ, &s.sender, &s.event); err != nil {
			rows.Close() // nolint: errcheck // the scan error is what matters
			return err
		}
		evs = append(evs, s)
	}
	if err = rows.Close(); err != nil {
		return err
	}
	for _, s := range evs {
		var ev struct {
			Content json.RawMessage `json:"content"`
		}
		if json.Unmarshal([]byte(s.event), &ev) != nil {
			continue
		}
		if err = putRelation(ctx, tx, s.room, s.id, s.typ, s.sender, ev.Content, s.pos); err != nil {
			return err
		}
	}
	return nil
}

// putRelation records the event's relation, if its content has one.
func putRelation(ctx context.Context, tx *sql.Tx, roomID, eventID, eventType, sender string, content []byte, pos int64) error {
	var c struct {
		RelatesTo struct {
			RelType any `json:"rel_type"`
			EventID any `json:"event_id"`
		} `json:"m.relates_to"`
	}
	if json.Unmarshal(content, &c) != nil {
		return nil
	}
	relType, _ := c.RelatesTo.RelType.(string)
	parent, _ := c.RelatesTo.EventID.(string)
	if relType == "" || parent == "" || parent == eventID {
		return nil
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO syncapi_relations (event_id, room_id, relates_to, rel_type, event_type, sender, position)
		VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (event_id) DO NOTHING`, eventID, roomID, parent, relType, eventType, sender, pos)
	return err
}

func scanRelations(rows *sql.Rows) ([]storage.Relation, error) {
	defer rows.Close() // nolint: errcheck // rows.Err reports what matters
	var out []storage.Relation
	for rows.Next() {
		var r storage.Relation
		if err := rows.Scan(&r.EventID, &r.RelatesTo, &r.RelType, &r.EventType, &r.Sender, &r.Position); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

const relationColumns = "event_id, relates_to, rel_type, event_type, sender, position"

// Relations implements storage.Database.
func (d *Database) Relations(ctx context.Context, q *storage.RelationsQuery) ([]storage.Relation, error) {
	if len(q.Parents) == 0 {
		return nil, nil
	}
	query := "SELECT " + relationColumns + " FROM syncapi_relations WHERE room_id = $1 AND relates_to IN ({ids})" +
		" AND ($2 = '' OR rel_type = $2) AND ($3 = '' OR event_type = $3) AND position > $4 AND position < $5 ORDER BY position"
	if q.Backward {
		query += " DESC"
	}
	query += " LIMIT $6"
	sqlText, args := d.db.Dialect.InList(query, "{ids}", []any{q.RoomID, q.RelType, q.EventType, q.After, q.Before, q.Limit}, q.Parents)
	rows, err := d.db.QueryContext(ctx, sqlText, args...)
	if err != nil {
		return nil, fmt.Errorf("select relations: %w", err)
	}
	return scanRelations(rows)
}

// Aggregations implements storage.Database.
func (d *Database) Aggregations(ctx context.Context, userID string, parents []string) (*storage.Aggregations, error) {
	agg := &storage.Aggregations{Threads: map[string]storage.ThreadSummary{}}
	if len(parents) == 0 {
		return agg, nil
	}
	sqlText, args := d.db.Dialect.InList(`SELECT relates_to, COUNT(*), MAX(position), MAX(CASE WHEN sender = $1 THEN 1 ELSE 0 END)
		FROM syncapi_relations WHERE rel_type = 'm.thread' AND relates_to IN ({ids}) GROUP BY relates_to`, "{ids}", []any{userID}, parents)
	rows, err := d.db.QueryContext(ctx, sqlText, args...)
	if err != nil {
		return nil, fmt.Errorf("select threads: %w", err)
	}
	latest := map[int64]string{}
	for rows.Next() {
		var root string
		var t storage.ThreadSummary
		var pos int64
		var participated int
		if err = rows.Scan(&root, &t.Count, &pos, &participated); err != nil {
			rows.Close() // nolint: errcheck // the scan error is what matters
			return nil, err
		}
		t.Participated = participated == 1
		agg.Threads[root] = t
		latest[pos] = root
	}
	if err = rows.Close(); err != nil {
		return nil, err
	}
	if len(latest) > 0 {
		positions := make([]int64, 0, len(latest))
		for p := range latest {
			positions = append(positions, p)
		}
		sqlText, args = d.db.Dialect.InList("SELECT position, event_id FROM syncapi_events WHERE position IN ({ids})", "{ids}", nil, positions)
		rows, err = d.db.QueryContext(ctx, sqlText, args...)
		if err != nil {
			return nil, fmt.Errorf("select latest thread events: %w", err)
		}
		for rows.Next() {
			var pos int64
			var id string
			if err = rows.Scan(&pos, &id); err != nil {
				rows.Close() // nolint: errcheck // the scan error is what matters
				return nil, err
			}
			t := agg.Threads[latest[pos]]
			t.LatestEventID = id
			agg.Threads[latest[pos]] = t
		}
		if err = rows.Close(); err != nil {
			return nil, err
		}
	}
	sqlText, args = d.db.Dialect.InList("SELECT "+relationColumns+" FROM syncapi_relations WHERE rel_type IN ('m.replace', 'm.reference')"+
		" AND relates_to IN ({ids}) ORDER BY position", "{ids}", nil, parents)
	rows, err = d.db.QueryContext(ctx, sqlText, args...)
	if err != nil {
		return nil, fmt.Errorf("select edits and references: %w", err)
	}
	if agg.Others, err = scanRelations(rows); err != nil {
		return nil, fmt.Errorf("select edits and references: %w", err)
	}
	return agg, nil
}

// ThreadRoots implements storage.Database.
func (d *Database) ThreadRoots(ctx context.Context, roomID, userID string, participated bool, before int64, limit int) ([]storage.ThreadRoot, error) {
	rows, err := d.db.QueryContext(ctx, `SELECT r.relates_to, MAX(r.position) FROM syncapi_relations r
		LEFT JOIN syncapi_events e ON e.event_id = r.relates_to
		WHERE r.room_id = $1 AND r.rel_type = 'm.thread'
		GROUP BY r.relates_to
		HAVING MAX(r.position) < $2 AND ($3 = FALSE OR MAX(CASE WHEN r.sender = $4 OR e.sender = $4 THEN 1 ELSE 0 END) = 1)
		ORDER BY MAX(r.position) DESC LIMIT $5`, roomID, before, participated, userID, limit)
	if err != nil {
		return nil, fmt.Errorf("select thread roots: %w", err)
	}
	defer rows.Close() // nolint: errcheck // rows.Err reports what matters
	var out []storage.ThreadRoot
	for rows.Next() {
		var t storage.ThreadRoot
		if err = rows.Scan(&t.EventID, &t.Latest); err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}
