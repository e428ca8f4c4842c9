package syncapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/internal/test/roomtest"
)

// searchDirectory runs POST /user_directory/search and returns the user IDs found.
func (h *harness) searchDirectory(token, term string) []string {
	h.t.Helper()
	body, _ := json.Marshal(map[string]any{"search_term": term}) // a map of a string always encodes
	req, _ := http.NewRequest(http.MethodPost, h.srv.URL+"/_matrix/client/v3/user_directory/search", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	var res struct {
		Results []struct {
			UserID string `json:"user_id"`
		} `json:"results"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&res) != nil {
		h.t.Fatalf("search %q: %d", term, resp.StatusCode)
	}
	var ids []string
	for _, r := range res.Results {
		ids = append(ids, r.UserID)
	}
	return ids
}

// TestUserDirectoryMigration fills the directory from the current state a sync API stored
// before the directory existed: the migration's backfill, not later events, finds the users.
func TestUserDirectoryMigration(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := start(t, db)
		alice, bob, carol, dave := h.user("alice"), h.user("bob"), h.user("carol"), h.user("dave")
		public := h.newRoom(alice)
		h.member(public, bob, bob, spec.Join)
		private := h.newRoom(carol, roomtest.Proto(carol, spec.MRoomJoinRules, roomtest.StateKey(""), map[string]string{"join_rule": "invite"}))
		h.member(private, carol, dave, spec.Invite)
		h.member(private, dave, dave, spec.Join)
		h.waitConsumed()
		h.stop()
		ctx := context.Background()
		for _, stmt := range []string{"DROP TABLE syncapi_user_directory", "DROP TABLE syncapi_user_directory_public",
			"DELETE FROM syncapi_schema_version WHERE version >= 6"} {
			if _, err := db.ExecContext(ctx, stmt); err != nil {
				t.Fatal(err)
			}
		}
		h = start(t, db)
		for _, u := range []string{alice, bob, carol, dave} {
			h.user(u[1 : len(u)-len(serverName)-1])
		}
		for _, c := range []struct {
			searcher, term string
			want           int
		}{{carol, "bob", 1}, {carol, "dave", 1}, {alice, "bob", 1}, {alice, "dave", 0}, {alice, "carol", 0}, {dave, "alice", 1}} {
			if got := h.searchDirectory(c.searcher, c.term); len(got) != c.want {
				t.Fatalf("%s searching %q finds %v", c.searcher, c.term, got)
			}
		}
	})
}
