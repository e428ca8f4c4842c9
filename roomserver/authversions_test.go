package roomserver_test

import (
	"fmt"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/internal/test/roomtest"
	"github.com/matrix-org/dendrite/roomserver/api"
)

// TestVersionRulesOnInputPath: the roomserver's input path applies each room version's own
// rules to local events: v12's creators (infinite power, never in users) and, in every
// version, the users_default rule that gomatrixserverlib omits.
func TestVersionRulesOnInputPath(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		h := start(t, db, roomtest.NewKey(t))
		defer h.stop()
		alice, mod := "@alice:"+serverName, "@mod:"+serverName
		cases := []struct {
			name     string
			versions []gomatrixserverlib.RoomVersion
			sender   string
			levels   func(v gomatrixserverlib.RoomVersion) map[string]any
			allow    bool
		}{
			{name: "the creator listed in users", versions: []gomatrixserverlib.RoomVersion{gomatrixserverlib.RoomVersionV11}, sender: alice,
				levels: func(gomatrixserverlib.RoomVersion) map[string]any {
					return map[string]any{"users": map[string]int{alice: 100, mod: 100}}
				}, allow: true},
			// rooms v12: creators "cannot be specified in the users field".
			{name: "the creator listed in users", versions: []gomatrixserverlib.RoomVersion{gomatrixserverlib.RoomVersionV12}, sender: alice,
				levels: func(gomatrixserverlib.RoomVersion) map[string]any {
					return map[string]any{"users": map[string]int{alice: 100, mod: 100}}
				}},
			{name: "the creator demotes a user at 100", versions: []gomatrixserverlib.RoomVersion{gomatrixserverlib.RoomVersionV12}, sender: alice,
				levels: func(gomatrixserverlib.RoomVersion) map[string]any {
					return map[string]any{"users": map[string]int{mod: 0}}
				}, allow: true},
			{name: "the creator demotes a user at 100", versions: []gomatrixserverlib.RoomVersion{gomatrixserverlib.RoomVersionV11}, sender: alice,
				levels: func(gomatrixserverlib.RoomVersion) map[string]any {
					return map[string]any{"users": map[string]int{alice: 100, mod: 0}}
				}},
			{name: "users_default raised above the sender", versions: offeredVersions(), sender: mod,
				levels: func(v gomatrixserverlib.RoomVersion) map[string]any {
					pl := modLevels(v, alice, mod)
					pl["users_default"] = 101
					return pl
				}},
		}
		for _, tc := range cases {
			for _, v := range tc.versions {
				t.Run(fmt.Sprintf("v%s %s", v, tc.name), func(t *testing.T) {
					roomID := h.newRoom(v, alice)
					setup := modLevels(v, alice, mod)
					if v == gomatrixserverlib.RoomVersionV11 {
						setup["users"] = map[string]int{alice: 100, mod: 100}
					}
					wantOK(t, "mod joins", h.submit(api.InputRoomEvents{RoomID: roomID, Events: []api.InputRoomEvent{
						roomtest.Proto(mod, spec.MRoomMember, roomtest.StateKey(mod), map[string]string{"membership": "join"}),
						roomtest.Proto(alice, spec.MRoomPowerLevels, roomtest.StateKey(""), setup),
					}}))
					res := h.submit(api.InputRoomEvents{RoomID: roomID, Events: []api.InputRoomEvent{
						roomtest.Proto(tc.sender, spec.MRoomPowerLevels, roomtest.StateKey(""), tc.levels(v))}})
					if tc.allow {
						wantOK(t, "power levels", res)
					} else if res[0].Err == nil || res[0].Err.Code != "M_FORBIDDEN" {
						t.Fatalf("power levels accepted: %+v", res[0])
					}
				})
			}
		}
	})
}

// modLevels are power levels with mod at 100 (the creator too before v12) and the power
// levels event at 100.
func modLevels(v gomatrixserverlib.RoomVersion, creator, mod string) map[string]any {
	pl := powerLevels(v, creator)
	pl["users"] = withUser(pl["users"], mod, 100)
	pl["events"] = map[string]int{spec.MRoomPowerLevels: 100}
	return pl
}
