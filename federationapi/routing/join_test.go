package routing

import (
	"encoding/base64"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/internal/test/roomtest"
)

// TestReferenceHash: from room version 3 an event's ID is its reference hash, which gives
// referenceHash an oracle; the hash ignores signatures and unsigned data.
func TestReferenceHash(t *testing.T) {
	key := roomtest.NewKey(t)
	r := &roomtest.Remote{T: t, Key: key, Origin: "a.test", Version: gomatrixserverlib.RoomVersionV10, RoomID: "!r:a.test"}
	create := r.Event("@alice:a.test", spec.MRoomCreate, roomtest.StateKey(""), map[string]string{"creator": "@alice:a.test", "room_version": "10"}, 1, nil, nil)
	msg := r.Event("@alice:a.test", "m.room.message", nil, map[string]string{"body": "hi"}, 2, []gomatrixserverlib.PDU{create}, []gomatrixserverlib.PDU{create})
	withUnsigned, err := msg.SetUnsigned(map[string]int{"age": 5})
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range []gomatrixserverlib.PDU{create, msg, withUnsigned} {
		h, err := referenceHash(ev)
		if err != nil {
			t.Fatal(err)
		}
		// Room versions 4 and later write the hash in URL-safe base64.
		if got := "$" + base64.RawURLEncoding.EncodeToString(h); got != ev.EventID() {
			t.Fatalf("reference hash of %s gives %s", ev.EventID(), got)
		}
	}
}
