package sql

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"
	"unicode"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"golang.org/x/text/unicode/norm"

	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/syncapi/storage"
)

// The user directory is derived from the current state: syncapi_user_directory holds one
// row per joined member of a room with the profile of their member event and its folded
// search text; syncapi_user_directory_public lists the rooms whose members anyone may find
// (join rule public or history world_readable). Both change in the transaction that
// changes the current state, so the directory is exactly as fresh as /sync.
const userDirectorySchema = `
CREATE TABLE IF NOT EXISTS syncapi_user_directory (
	room_id TEXT NOT NULL,
	user_id TEXT NOT NULL,
	display_name TEXT NOT NULL,
	avatar_url TEXT NOT NULL,
	search_text TEXT NOT NULL,
	PRIMARY KEY (room_id, user_id)
);
CREATE INDEX IF NOT EXISTS syncapi_user_directory_user ON syncapi_user_directory (user_id);
CREATE TABLE IF NOT EXISTS syncapi_user_directory_public (
	room_id TEXT PRIMARY KEY
);
`

// migrateUserDirectory creates the directory's tables and fills them from the current
// state already stored.
func migrateUserDirectory(ctx context.Context, tx *sql.Tx, d sqlutil.Dialect) error {
	for _, stmt := range strings.Split(d.Schema(userDirectorySchema), ";") {
		if strings.TrimSpace(stmt) == "" {
			continue
		}
		if _, err := tx.ExecContext(ctx, stmt); err != nil {
			return err
		}
	}
	rows, err := tx.QueryContext(ctx, "SELECT room_id, state_key, event_json FROM syncapi_current_state WHERE type = $1 AND membership = $2",
		spec.MRoomMember, spec.Join)
	if err != nil {
		return err
	}
	type member struct{ room, user, json string }
	var members []member
	for rows.Next() {
		var m member
		if err = rows.Scan(&m.room, &m.user, &m.json); err != nil {
			rows.Close() // nolint: errcheck // the scan error is what matters
			return err
		}
		members = append(members, m)
	}
	if err = rows.Close(); err != nil {
		return err
	}
	for _, m := range members {
		if err = putDirectoryMember(ctx, tx, m.room, m.user, []byte(m.json)); err != nil {
			return err
		}
	}
	roomRows, err := tx.QueryContext(ctx, "SELECT DISTINCT room_id FROM syncapi_current_state WHERE type = $1", spec.MRoomCreate)
	if err != nil {
		return err
	}
	rooms, err := sqlutil.Column[string](roomRows)
	if err != nil {
		return err
	}
	for _, room := range rooms {
		if err = updateDirectoryPublic(ctx, tx, room); err != nil {
			return err
		}
	}
	return nil
}

// updateUserDirectory applies one event's state delta to the directory; removedMembers are
// the users whose member events the delta removed from the current state.
func updateUserDirectory(ctx context.Context, tx *sql.Tx, roomID string, ev *storage.NewRoomEvent, removedMembers []string) error {
	for _, user := range removedMembers {
		if _, err := tx.ExecContext(ctx, "DELETE FROM syncapi_user_directory WHERE room_id = $1 AND user_id = $2", roomID, user); err != nil {
			return err
		}
	}
	visibilityChanged := len(ev.RemovesStateEventIDs) > 0
	for _, s := range ev.AddsState {
		switch sk := s.StateKey(); {
		case sk == nil:
		case s.Type() == spec.MRoomMember:
			if membership, _ := s.Membership(); membership == spec.Join {
				if err := putDirectoryMember(ctx, tx, roomID, *sk, s.JSON()); err != nil {
					return err
				}
			} else if _, err := tx.ExecContext(ctx, "DELETE FROM syncapi_user_directory WHERE room_id = $1 AND user_id = $2", roomID, *sk); err != nil {
				return err
			}
		case s.Type() == spec.MRoomJoinRules, s.Type() == spec.MRoomHistoryVisibility:
			visibilityChanged = true
		}
	}
	if !visibilityChanged {
		return nil
	}
	return updateDirectoryPublic(ctx, tx, roomID)
}

// putDirectoryMember stores a joined member with the profile of their member event.
func putDirectoryMember(ctx context.Context, tx *sql.Tx, roomID, userID string, eventJSON []byte) error {
	var ev struct {
		Content struct {
			DisplayName any `json:"displayname"`
			AvatarURL   any `json:"avatar_url"`
		} `json:"content"`
	}
	_ = json.Unmarshal(eventJSON, &ev) // nolint: errcheck // a member event the roomserver accepted is JSON; odd profile fields read as none
	name, _ := ev.Content.DisplayName.(string)
	avatar, _ := ev.Content.AvatarURL.(string)
	_, err := tx.ExecContext(ctx, `INSERT INTO syncapi_user_directory (room_id, user_id, display_name, avatar_url, search_text)
		VALUES ($1, $2, $3, $4, $5) ON CONFLICT (room_id, user_id) DO UPDATE SET display_name = $3, avatar_url = $4, search_text = $5`,
		roomID, userID, name, avatar, foldSearch(userID)+"\n"+foldSearch(name))
	return err
}

// updateDirectoryPublic records whether the room's members are in everyone's directory.
func updateDirectoryPublic(ctx context.Context, tx *sql.Tx, roomID string) error {
	var joinRule, visibility string
	rows, err := tx.QueryContext(ctx, "SELECT type, event_json FROM syncapi_current_state WHERE room_id = $1 AND state_key = '' AND type IN ($2, $3)",
		roomID, spec.MRoomJoinRules, spec.MRoomHistoryVisibility)
	if err != nil {
		return err
	}
	for rows.Next() {
		var typ, eventJSON string
		if err = rows.Scan(&typ, &eventJSON); err != nil {
			rows.Close() // nolint: errcheck // the scan error is what matters
			return err
		}
		var ev struct {
			Content struct {
				JoinRule          any `json:"join_rule"`
				HistoryVisibility any `json:"history_visibility"`
			} `json:"content"`
		}
		_ = json.Unmarshal([]byte(eventJSON), &ev) // nolint: errcheck // odd content reads as not public
		if typ == spec.MRoomJoinRules {
			joinRule, _ = ev.Content.JoinRule.(string)
		} else {
			visibility, _ = ev.Content.HistoryVisibility.(string)
		}
	}
	if err = rows.Close(); err != nil {
		return err
	}
	if joinRule == spec.Public || visibility == "world_readable" {
		_, err = tx.ExecContext(ctx, "INSERT INTO syncapi_user_directory_public (room_id) VALUES ($1) ON CONFLICT (room_id) DO NOTHING", roomID)
	} else {
		_, err = tx.ExecContext(ctx, "DELETE FROM syncapi_user_directory_public WHERE room_id = $1", roomID)
	}
	return err
}

// foldSearch is s as the directory matches it: lower case, without accents, so that
// "Élodie" is found by "elo".
func foldSearch(s string) string {
	var b strings.Builder
	for _, r := range norm.NFD.String(s) {
		if unicode.Is(unicode.Mn, r) {
			continue
		}
		b.WriteRune(unicode.ToLower(r))
	}
	return b.String()
}

// SearchUserDirectory implements storage.Database. A user matches when every word of the
// term is in their user ID or display name; results are ordered by user ID. The searcher
// shares no room with themself: they find themself only through a public room. A public
// room counts only while a user of the searcher's server is joined to it: once the last
// one left, this server no longer follows the room and its member list here is stale
// (sytest "User in remote room doesn't appear in user directory after server left room").
func (d *Database) SearchUserDirectory(ctx context.Context, searcher, term string, limit int) ([]storage.DirectoryUser, bool, error) {
	words := strings.Fields(foldSearch(term))
	if len(words) == 0 {
		return nil, false, nil
	}
	local, err := spec.NewUserID(searcher, true)
	if err != nil {
		return nil, false, fmt.Errorf("search user directory: searcher %q: %w", searcher, err)
	}
	args := []any{searcher, "%:" + sqlutil.EscapeLike(string(local.Domain()))}
	conds := make([]string, 0, len(words))
	for _, w := range words {
		args = append(args, "%"+sqlutil.EscapeLike(w)+"%")
		conds = append(conds, fmt.Sprintf(`d.search_text LIKE $%d ESCAPE '\'`, len(args)))
	}
	args = append(args, limit+1)
	query := `SELECT d.user_id, MAX(d.display_name), MAX(d.avatar_url) FROM syncapi_user_directory d
		WHERE ` + strings.Join(conds, " AND ") + ` AND (
			(d.user_id <> $1 AND d.room_id IN (SELECT room_id FROM syncapi_user_directory WHERE user_id = $1))
			OR d.room_id IN (SELECT p.room_id FROM syncapi_user_directory_public p WHERE EXISTS (
				SELECT 1 FROM syncapi_user_directory l WHERE l.room_id = p.room_id AND l.user_id LIKE $2 ESCAPE '\')))
		GROUP BY d.user_id ORDER BY d.user_id LIMIT $` + fmt.Sprint(len(args))
	rows, err := d.db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, false, fmt.Errorf("search user directory: %w", err)
	}
	defer rows.Close() // nolint: errcheck // rows.Err reports what matters
	var out []storage.DirectoryUser
	for rows.Next() {
		var u storage.DirectoryUser
		if err = rows.Scan(&u.UserID, &u.DisplayName, &u.AvatarURL); err != nil {
			return nil, false, fmt.Errorf("scan user directory: %w", err)
		}
		out = append(out, u)
	}
	if err = rows.Err(); err != nil {
		return nil, false, fmt.Errorf("search user directory: %w", err)
	}
	if len(out) > limit {
		return out[:limit], true, nil
	}
	return out, false, nil
}
