package internal

import "testing"

// TestFillFromInviteState: an invite over federation to a room this server is not in
// names the room and its sender from the invite's stripped state; names the current
// state gave stay.
func TestFillFromInviteState(t *testing.T) {
	unsigned := []byte(`{"invite_room_state":[
		{"type":"m.room.name","state_key":"","content":{"name":"Test Name"}},
		{"type":"m.room.canonical_alias","state_key":"","content":{"alias":"#t:remote.test"}},
		{"type":"m.room.member","state_key":"@c:remote.test","content":{"membership":"join","displayname":"Charlie"}},
		{"type":"m.room.member","state_key":"@d:remote.test","content":{"membership":"join","displayname":"Dave"}},
		{"type":"m.room.name","state_key":"x","content":{"name":"not the name"}}]}`)
	n := &notification{Sender: "@c:remote.test"}
	fillFromInviteState(n, unsigned)
	if n.RoomName != "Test Name" || n.RoomAlias != "#t:remote.test" || n.SenderDisplayName != "Charlie" {
		t.Fatalf("got name %q alias %q sender %q", n.RoomName, n.RoomAlias, n.SenderDisplayName)
	}
	known := &notification{Sender: "@c:remote.test", RoomName: "Known"}
	fillFromInviteState(known, unsigned)
	if known.RoomName != "Known" {
		t.Fatalf("current state's name replaced by %q", known.RoomName)
	}
	none := &notification{}
	fillFromInviteState(none, nil)
	fillFromInviteState(none, []byte(`{"invite_room_state":"bad"}`))
	if none.RoomName != "" || none.RoomAlias != "" || none.SenderDisplayName != "" {
		t.Fatalf("names from nothing: %+v", none)
	}
}
