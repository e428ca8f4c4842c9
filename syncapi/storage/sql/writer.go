package sql

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/internal/clientevent"
	"github.com/matrix-org/dendrite/syncapi/storage"
)

// WriteRoomEvents implements storage.Database.
func (d *Database) WriteRoomEvents(ctx context.Context, events []storage.NewRoomEvent, offset storage.Offset) (*storage.Applied, error) {
	return d.write(ctx, storage.StreamRoomEvents, offset, func(tx *sql.Tx, applied *storage.Applied) error {
		for i := range events {
			if err := d.writeRoomEvent(ctx, tx, &events[i], applied); err != nil {
				return fmt.Errorf("store event %s: %w", events[i].Event.EventID(), err)
			}
		}
		return nil
	})
}

// nextPosition takes the next stream position for tx.
func (d *Database) nextPosition(ctx context.Context, tx *sql.Tx) (int64, error) {
	var pos int64
	var err error
	if d.pos != nil {
		pos, err = d.pos.next(ctx, tx)
	} else {
		err = tx.QueryRowContext(ctx, "UPDATE syncapi_stream_position SET position = position + 1 WHERE id = 1 RETURNING position").Scan(&pos)
	}
	if err != nil {
		return 0, fmt.Errorf("take stream position: %w", err)
	}
	return pos, nil
}

// storeAtNextPosition takes the next stream position, runs query with args and the position
// as its last parameter, and records the position in applied.
func (d *Database) storeAtNextPosition(ctx context.Context, tx *sql.Tx, applied *storage.Applied, what, query string, args ...any) error {
	pos, err := d.nextPosition(ctx, tx)
	if err != nil {
		return err
	}
	if _, err = tx.ExecContext(ctx, query, append(args, pos)...); err != nil {
		return fmt.Errorf("store %s: %w", what, err)
	}
	applied.Position = pos
	return nil
}

const insertEventSQL = `INSERT INTO syncapi_events (position, room_id, event_id, type, sender, state_key, event_json,
	room_version, history_visibility, replaces_event_id, txn_user_id, txn_device_id, txn_id)
	VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)`

// writeRoomEvent stores one event and applies its state delta. An event already stored was
// applied in full by an earlier delivery, so it is skipped whole.
func (d *Database) writeRoomEvent(ctx context.Context, tx *sql.Tx, ev *storage.NewRoomEvent, applied *storage.Applied) error {
	e := ev.Event
	var n int
	if err := tx.QueryRowContext(ctx, "SELECT COUNT(*) FROM syncapi_events WHERE event_id = $1", e.EventID()).Scan(&n); err != nil {
		return err
	}
	if n > 0 {
		return nil
	}
	if ev.Backfilled {
		return d.writeBackfilled(ctx, tx, ev)
	}
	pos, err := d.nextPosition(ctx, tx)
	if err != nil {
		return err
	}
	roomID := e.RoomID().String()
	replaces, replacedJSON := "", ""
	if sk := e.StateKey(); sk != nil {
		err = tx.QueryRowContext(ctx, "SELECT event_id, event_json FROM syncapi_current_state WHERE room_id = $1 AND type = $2 AND state_key = $3",
			roomID, e.Type(), *sk).Scan(&replaces, &replacedJSON)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
	}
	txn := storage.Txn{}
	if ev.Txn != nil {
		txn = *ev.Txn
	}
	eventJSON := e.JSON()
	if replaces != "" {
		if eventJSON, err = withPrevContent(eventJSON, replaces, replacedJSON); err != nil {
			return err
		}
	}
	_, err = tx.ExecContext(ctx, insertEventSQL, pos, roomID, e.EventID(), e.Type(), string(e.SenderID()), e.StateKey(), string(eventJSON),
		string(e.Version()), ev.HistoryVisibility, replaces, txn.UserID, txn.DeviceID, txn.TxnID)
	if err != nil {
		return err
	}
	if err = putRelation(ctx, tx, roomID, e.EventID(), e.Type(), string(e.SenderID()), e.Content(), pos); err != nil {
		return fmt.Errorf("record relation: %w", err)
	}
	if err = d.applyStateDelta(ctx, tx, roomID, pos, ev, applied); err != nil {
		return err
	}
	if err = noteActivity(ctx, tx, roomID, pos, isBumpType(e.Type())); err != nil {
		return fmt.Errorf("record room activity: %w", err)
	}
	if ev.RedactsEventID != "" {
		if err = redact(ctx, tx, ev.RedactsEventID, e); err != nil {
			return fmt.Errorf("redact %s: %w", ev.RedactsEventID, err)
		}
	}
	applied.Rooms = append(applied.Rooms, roomID)
	applied.Position = pos
	return nil
}

// writeBackfilled stores an event older than all the room's stored events at the next
// negative position. It replaces no state (the current state already holds what it set,
// if anything) and is invisible to /sync, so it wakes no one.
func (d *Database) writeBackfilled(ctx context.Context, tx *sql.Tx, ev *storage.NewRoomEvent) error {
	e := ev.Event
	var pos int64
	err := tx.QueryRowContext(ctx, "UPDATE syncapi_stream_position SET backfill_position = backfill_position - 1 WHERE id = 1 RETURNING backfill_position").Scan(&pos)
	if err != nil {
		return fmt.Errorf("take backfill position: %w", err)
	}
	_, err = tx.ExecContext(ctx, insertEventSQL, pos, e.RoomID().String(), e.EventID(), e.Type(), string(e.SenderID()), e.StateKey(), string(e.JSON()),
		string(e.Version()), ev.HistoryVisibility, "", "", "", "")
	if err != nil {
		return err
	}
	if err = putRelation(ctx, tx, e.RoomID().String(), e.EventID(), e.Type(), string(e.SenderID()), e.Content(), pos); err != nil {
		return fmt.Errorf("record relation: %w", err)
	}
	if ev.RedactsEventID == "" {
		return nil
	}
	return redact(ctx, tx, ev.RedactsEventID, e)
}

// withPrevContent adds to a state event's unsigned the content and sender of the state event
// it replaced (prev_content, prev_sender, replaces_state), as clients show changes with them.
// prevJSON is the replaced event as the current state held it.
func withPrevContent(eventJSON []byte, replaces, prevJSON string) ([]byte, error) {
	var prev struct {
		Content json.RawMessage `json:"content"`
		Sender  string          `json:"sender"`
	}
	var ev map[string]json.RawMessage
	if json.Unmarshal([]byte(prevJSON), &prev) != nil || json.Unmarshal(eventJSON, &ev) != nil {
		return eventJSON, nil // stored events were valid JSON; an odd one only loses prev_content
	}
	ev["unsigned"] = clientevent.WithUnsigned(ev["unsigned"], map[string]any{"prev_content": prev.Content, "prev_sender": prev.Sender, "replaces_state": replaces})
	return json.Marshal(ev)
}

const upsertStateSQL = `INSERT INTO syncapi_current_state (room_id, type, state_key, event_id, position, membership, event_json)
	VALUES ($1, $2, $3, $4, $5, $6, $7)
	ON CONFLICT (room_id, type, state_key) DO UPDATE SET event_id = $4, position = $5, membership = $6, event_json = $7`

func (d *Database) applyStateDelta(ctx context.Context, tx *sql.Tx, roomID string, pos int64, ev *storage.NewRoomEvent, applied *storage.Applied) error {
	removed, err := d.removeState(ctx, tx, roomID, ev.RemovesStateEventIDs)
	if err != nil {
		return err
	}
	var removedMembers []string
	for k := range removed {
		if k.Type == spec.MRoomMember {
			removedMembers = append(removedMembers, k.StateKey)
		}
	}
	for _, s := range ev.AddsState {
		sk := s.StateKey()
		if sk == nil {
			continue
		}
		membership := ""
		if s.Type() == spec.MRoomMember {
			membership, _ = s.Membership() // the roomserver accepted it, so the content is valid
		}
		if _, err := tx.ExecContext(ctx, upsertStateSQL, roomID, s.Type(), *sk, s.EventID(), pos, membership, string(s.JSON())); err != nil {
			return fmt.Errorf("add state: %w", err)
		}
		if membership == "" {
			continue
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO syncapi_memberships (room_id, user_id, membership, event_id, position)
			VALUES ($1, $2, $3, $4, $5) ON CONFLICT (room_id, user_id, event_id) DO NOTHING`, roomID, *sk, membership, s.EventID(), pos)
		if err != nil {
			return fmt.Errorf("record membership: %w", err)
		}
		if membership == spec.Join || membership == spec.Leave || membership == spec.Ban {
			if err = endPeeks(ctx, tx, roomID, *sk); err != nil {
				return err
			}
		}
		applied.Members = append(applied.Members, storage.MemberChange{RoomID: roomID, UserID: *sk, Membership: membership, EventID: s.EventID(), Position: pos})
	}
	for _, s := range ev.AddsState {
		if sk := s.StateKey(); sk != nil {
			delete(removed, storage.StateKeyTuple{Type: s.Type(), StateKey: *sk})
		}
	}
	for k := range removed {
		_, err := tx.ExecContext(ctx, `INSERT INTO syncapi_state_removals (room_id, type, state_key, position) VALUES ($1, $2, $3, $4)
			ON CONFLICT DO NOTHING`, roomID, k.Type, k.StateKey, pos)
		if err != nil {
			return fmt.Errorf("record state removal: %w", err)
		}
	}
	if err := updateUserDirectory(ctx, tx, roomID, ev, removedMembers); err != nil {
		return fmt.Errorf("update user directory: %w", err)
	}
	return nil
}

// removeState deletes the current state entries among eventIDs and returns their keys.
func (d *Database) removeState(ctx context.Context, tx *sql.Tx, roomID string, eventIDs []string) (map[storage.StateKeyTuple]bool, error) {
	removed := map[storage.StateKeyTuple]bool{}
	if len(eventIDs) == 0 {
		return removed, nil
	}
	q, args := d.db.Dialect.InList("SELECT type, state_key FROM syncapi_current_state WHERE room_id = $1 AND event_id IN ({ids})", "{ids}",
		[]any{roomID}, eventIDs)
	rows, err := tx.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("select removed state: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var k storage.StateKeyTuple
		if err = rows.Scan(&k.Type, &k.StateKey); err != nil {
			return nil, fmt.Errorf("select removed state: %w", err)
		}
		removed[k] = true
	}
	if err = rows.Err(); err != nil {
		return nil, fmt.Errorf("select removed state: %w", err)
	}
	q, args = d.db.Dialect.InList("DELETE FROM syncapi_current_state WHERE room_id = $1 AND event_id IN ({ids})", "{ids}", []any{roomID}, eventIDs)
	if _, err := tx.ExecContext(ctx, q, args...); err != nil {
		return nil, fmt.Errorf("remove state: %w", err)
	}
	return removed, nil
}

// redact replaces the stored target, and its current-state copy, by its redacted form, and
// forgets its relation (redacted content has no m.relates_to).
// An unknown target (never delivered to this server's sync API) is left alone.
func redact(ctx context.Context, tx *sql.Tx, eventID string, by gomatrixserverlib.PDU) error {
	var version, eventJSON string
	err := tx.QueryRowContext(ctx, "SELECT room_version, event_json FROM syncapi_events WHERE event_id = $1", eventID).Scan(&version, &eventJSON)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return err
	}
	verImpl, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(version))
	if err != nil {
		return err
	}
	redacted, err := verImpl.RedactEventJSON([]byte(eventJSON))
	if err != nil {
		return err
	}
	if redacted, err = withRedactedBecause(redacted, by); err != nil {
		return err
	}
	if _, err = tx.ExecContext(ctx, "UPDATE syncapi_events SET event_json = $1, redacted = TRUE WHERE event_id = $2", string(redacted), eventID); err != nil {
		return err
	}
	if _, err = tx.ExecContext(ctx, "DELETE FROM syncapi_relations WHERE event_id = $1", eventID); err != nil {
		return err
	}
	_, err = tx.ExecContext(ctx, "UPDATE syncapi_current_state SET event_json = $1 WHERE event_id = $2", string(redacted), eventID)
	return err
}

// withRedactedBecause adds the redaction, in the client format, as unsigned.redacted_because,
// and its ID as unsigned.redacted_by (NOTSPEC: not in the spec's ClientEvent, but Synapse
// serves it and sytest checks it).
func withRedactedBecause(redactedJSON []byte, by gomatrixserverlib.PDU) ([]byte, error) {
	because, err := clientevent.FromPDU(by)
	if err != nil {
		return nil, err
	}
	var ev map[string]json.RawMessage
	if err = json.Unmarshal(redactedJSON, &ev); err != nil {
		return nil, err
	}
	ev["unsigned"] = clientevent.WithUnsigned(ev["unsigned"], map[string]any{"redacted_because": because, "redacted_by": by.EventID()})
	return json.Marshal(ev)
}

// WriteAccountData implements storage.Database.
func (d *Database) WriteAccountData(ctx context.Context, changes []storage.AccountDataChange, offset storage.Offset) (*storage.Applied, error) {
	return d.write(ctx, storage.StreamAccountData, offset, func(tx *sql.Tx, applied *storage.Applied) error {
		for _, c := range changes {
			var old string
			err := tx.QueryRowContext(ctx, "SELECT content FROM syncapi_account_data WHERE user_id = $1 AND room_id = $2 AND type = $3",
				c.UserID, c.RoomID, c.Type).Scan(&old)
			if err == nil && old == string(c.Content) {
				continue
			}
			if err != nil && !errors.Is(err, sql.ErrNoRows) {
				return err
			}
			err = d.storeAtNextPosition(ctx, tx, applied, "account data", `INSERT INTO syncapi_account_data (user_id, room_id, type, content, position)
				VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id, room_id, type) DO UPDATE SET content = $4, position = $5`,
				c.UserID, c.RoomID, c.Type, string(c.Content))
			if err != nil {
				return err
			}
			applied.Users = append(applied.Users, c.UserID)
		}
		return nil
	})
}

// write runs fn in a transaction that then saves the consumer's next offset, and returns
// what fn applied. On PostgreSQL a committed write returns (and wakes its readers) only once
// everything before its positions is visible.
func (d *Database) write(ctx context.Context, stream string, offset storage.Offset,
	fn func(tx *sql.Tx, applied *storage.Applied) error) (*storage.Applied, error) {
	var applied storage.Applied
	err := d.withPositions(ctx, func(tx *sql.Tx) error {
		applied = storage.Applied{Stream: stream}
		if err := fn(tx, &applied); err != nil {
			return err
		}
		return finish(ctx, tx, d, offset)
	})
	if err != nil {
		return nil, err
	}
	if d.pos != nil {
		d.pos.wait(applied.Position)
	}
	return &applied, nil
}

// withPositions runs fn in a transaction. On PostgreSQL the positions the transaction took
// stop being in flight once it has ended, however it ends (a panic in fn included).
func (d *Database) withPositions(ctx context.Context, fn func(tx *sql.Tx) error) error {
	if d.pos == nil {
		return d.db.WithTx(ctx, fn)
	}
	var written *sql.Tx
	defer func() {
		if written != nil {
			d.pos.done(written)
		}
	}()
	return d.db.WithTx(ctx, func(tx *sql.Tx) error {
		written = tx
		return fn(tx)
	})
}

// finish saves the consumer's next offset and sequence number.
func finish(ctx context.Context, tx *sql.Tx, d *Database, offset storage.Offset) error {
	if offset.Seq > 0 {
		if err := d.offsets.SaveSeq(ctx, tx, offset.Topic, offset.Partition, offset.Seq); err != nil {
			return err
		}
	}
	if offset.Next == 0 {
		return nil
	}
	return d.offsets.Save(ctx, tx, offset.Topic, offset.Partition, offset.Next)
}
