package api

import (
	"encoding/json"
	"testing"
)

// FuzzDecodeInput feeds arbitrary bytes to the InputRoomEvent payload decoder, as the
// roomserver does for every record: it must return an error or a value, never panic.
func FuzzDecodeInput(f *testing.F) {
	f.Add([]byte(`{"room_id":"!a:b","events":[{"kind":"new","proto":{"sender":"@a:b","type":"m.room.message","content":{}}}]}`))
	f.Add([]byte(`{"room_id":"!a:b","room_version":"10","events":[{"kind":"new","event":{"room_version":"10","event_id":"$x","json":{}}}]}`))
	f.Add([]byte(`{"events":[{"event":{"room_version":"1","event_id":"$x:b","json":{"type":"m.room.create"}}}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var in InputRoomEvents
		if err := json.Unmarshal(b, &in); err != nil {
			return
		}
		if _, err := json.Marshal(in); err != nil {
			t.Fatalf("decoded input does not encode again: %v", err)
		}
	})
}

// FuzzParseEvent checks that event parsing rejects rather than panics on arbitrary JSON.
func FuzzParseEvent(f *testing.F) {
	f.Add("10", "$abc", []byte(`{"type":"m.room.message","room_id":"!a:b","sender":"@a:b","content":{},"depth":1,"prev_events":[],"auth_events":[],"origin_server_ts":1}`))
	f.Add("1", "$abc:b", []byte(`{}`))
	f.Fuzz(func(t *testing.T, version, eventID string, b []byte) {
		pdu, err := ParseTrusted(version, eventID, b, false)
		if err != nil {
			return
		}
		if _, err := json.Marshal(Event{PDU: pdu}); err != nil {
			t.Fatalf("parsed event does not encode: %v", err)
		}
	})
}
