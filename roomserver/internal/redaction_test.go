package internal

import (
	"fmt"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

// TestPowerToRedact: the first condition of "Handling redactions" (rooms v3+; rule 11 of
// the v1 auth rules): "the power level of the redaction event's sender is greater than or
// equal to the redact level", with the power levels rules' defaults and v12's creators.
func TestPowerToRedact(t *testing.T) {
	v9, v10, v11, v12 := gomatrixserverlib.RoomVersionV9, gomatrixserverlib.RoomVersionV10, gomatrixserverlib.RoomVersionV11, gomatrixserverlib.RoomVersionV12
	joined := []stateEvent{member(alice, alice, spec.Join), member(bob, bob, spec.Join), member(mod, mod, spec.Join)}
	withPL := func(v gomatrixserverlib.RoomVersion, change func(pl map[string]any)) []stateEvent {
		pl := basePowerLevels(v)
		change(pl)
		return append(append([]stateEvent(nil), joined...), state(alice, spec.MRoomPowerLevels, pl))
	}
	same := func(map[string]any) {}
	cases := []struct {
		name    string
		version gomatrixserverlib.RoomVersion
		state   []stateEvent
		sender  string
		want    bool
	}{
		// "If there is no m.room.power_levels event in the room, the room creator has power
		// level 100" (v1-11) and the redact level defaults to 50.
		{"no power levels, the creator", v10, joined, alice, true},
		{"no power levels, another user", v10, joined, bob, false},
		{"no power levels, the v11 creator is the create event's sender", v11, joined, alice, true},
		{"a user at the redact level", v10, withPL(v10, same), mod, true},
		{"a user below the redact level", v10, withPL(v10, same), bob, false},
		{"redact level lowered to 0", v10, withPL(v10, func(pl map[string]any) { pl["redact"] = 0 }), bob, true},
		{"redact level raised above the mod", v10, withPL(v10, func(pl map[string]any) { pl["redact"] = 51 }), mod, false},
		{"users_default at the redact level", v10, withPL(v10, func(pl map[string]any) { pl["users_default"] = 50 }), bob, true},
		{"stringy redact level in v9", v9, withPL(v9, func(pl map[string]any) { pl["redact"] = "30" }), mod, true},
		{"unparseable power levels give nobody the power", v10, withPL(v10, func(pl map[string]any) { pl["redact"] = "30" }), alice, false},
		// v12: "The power level of room creators is infinitely high"; they are not in users.
		{"v12 creator without a users entry", v12, withPL(v12, func(pl map[string]any) { pl["redact"] = 100 }), alice, true},
		{"v12 creator without power levels", v12, joined, alice, true},
		{"v12 admin at 100 below a redact level of 101", v12, withPL(v12, func(pl map[string]any) { pl["redact"] = 101 }), admin, false},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("v%s %s", tc.version, tc.name), func(t *testing.T) {
			ev, auth := buildRoom(t, tc.version, tc.state, stateEvent{tc.sender, spec.MRoomRedaction, nil, map[string]any{"redacts": "$target"}})
			if got := powerToRedact(ev, auth); got != tc.want {
				t.Fatalf("powerToRedact = %v, want %v", got, tc.want)
			}
		})
	}
}
