package federationapi_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	eduapi "github.com/matrix-org/dendrite/eduserver/api"
	"github.com/matrix-org/dendrite/internal/test"
	presenceapi "github.com/matrix-org/dendrite/presenceserver/api"
	receiptapi "github.com/matrix-org/dendrite/receiptserver/api"
)

// TestReceiveEDUs: the EDUs of a transaction reach the EDU servers' inputs; those naming
// users of another server than the origin, or a typing user not in the room, do not.
func TestReceiveEDUs(t *testing.T) {
	t.Parallel()
	forEngine(t, func(t *testing.T, newDSN func() string) {
		clk := &clock{}
		a, b := newNode(t, newDSN(), clk, nodeOpts{}), newNode(t, newDSN(), clk, nodeOpts{})
		r := newRoomOn(t, b)
		copyRoom(t, a, r)
		m1 := r.message("one")
		if res, err := sendTxn(t, b, a, "pdu", m1); err != nil || res.PDUs[m1.EventID()].Error != "" {
			t.Fatalf("send m1: %+v %v", res, err)
		}
		follow := map[string]*test.Follow{}
		for _, topic := range []string{"edu-typing", "edu-receipt", "edu-presence", "edu-todevice"} {
			follow[topic] = test.FollowTopic(t, a.log, topic)
		}
		local, forged := "@x:"+string(a.name), "@mallory:"+string(a.name)
		edus := []any{
			map[string]any{"edu_type": "m.typing", "content": map[string]any{"room_id": r.RoomID, "user_id": r.alice, "typing": true}},
			map[string]any{"edu_type": "m.typing", "content": map[string]any{"room_id": r.RoomID, "user_id": forged, "typing": true}},
			map[string]any{"edu_type": "m.typing", "content": map[string]any{"room_id": r.RoomID, "user_id": "@nobody:" + string(b.name), "typing": true}},
			map[string]any{"edu_type": "m.receipt", "content": map[string]any{r.RoomID: map[string]any{"m.read": map[string]any{
				r.alice: map[string]any{"event_ids": []string{m1.EventID()}, "data": map[string]any{"ts": 5}},
				forged:  map[string]any{"event_ids": []string{m1.EventID()}, "data": map[string]any{"ts": 5}},
			}}}},
			map[string]any{"edu_type": "m.presence", "content": map[string]any{"push": []any{
				map[string]any{"user_id": r.alice, "presence": "online", "last_active_ago": 1000, "status_msg": "hi"},
				map[string]any{"user_id": forged, "presence": "online"},
			}}},
			map[string]any{"edu_type": "m.direct_to_device", "content": map[string]any{"sender": r.alice, "type": "m.test", "message_id": "m-1",
				"messages": map[string]any{local: map[string]any{"D": map[string]int{"n": 1}}, "@y:elsewhere.example": map[string]any{"D": map[string]int{"n": 2}}}}},
			map[string]any{"edu_type": "m.direct_to_device", "content": map[string]any{"sender": forged, "type": "m.test", "message_id": "m-2",
				"messages": map[string]any{local: map[string]any{"D": map[string]int{"n": 3}}}}},
			map[string]any{"edu_type": "m.something_else", "content": map[string]any{}},
		}
		raw := make([]gomatrixserverlib.EDU, len(edus))
		for i, e := range edus {
			m := e.(map[string]any)
			content, _ := json.Marshal(m["content"]) // plain maps
			raw[i] = gomatrixserverlib.EDU{Type: m["edu_type"].(string), Origin: string(b.name), Content: content}
		}
		_, err := b.client.SendTransaction(context.Background(), gomatrixserverlib.Transaction{
			TransactionID: "edus", Origin: b.name, Destination: a.name, OriginServerTS: spec.AsTimestamp(time.Now()), EDUs: raw,
		})
		if err != nil {
			t.Fatal(err)
		}
		var typing eduapi.InputTypingEvent
		decodeOne(t, follow["edu-typing"], &typing)
		if typing.UserID != r.alice || !typing.Typing || typing.RoomID != r.RoomID {
			t.Fatalf("typing input %+v", typing)
		}
		var receipt receiptapi.InputReceiptEvent
		decodeOne(t, follow["edu-receipt"], &receipt)
		if receipt.UserID != r.alice || receipt.EventID != m1.EventID() || receipt.Depth != m1.Depth() || receipt.TS != 5 {
			t.Fatalf("receipt input %+v", receipt)
		}
		var presence presenceapi.InputPresenceEvent
		decodeOne(t, follow["edu-presence"], &presence)
		if presence.UserID != r.alice || presence.Kind != presenceapi.InputKindRemote || presence.StatusMsg == nil || *presence.StatusMsg != "hi" {
			t.Fatalf("presence input %+v", presence)
		}
		var toDevice eduapi.InputSendToDeviceEvent
		decodeOne(t, follow["edu-todevice"], &toDevice)
		if toDevice.Sender != r.alice || len(toDevice.Messages) != 1 || toDevice.Messages[local] == nil || toDevice.TxnID != "federation:m-1" {
			t.Fatalf("to-device input %+v", toDevice)
		}
	})
}

// decodeOne decodes the one record on f into v, and fails if there is another. The
// transaction's EDUs are written before /send answers, so once it has answered every record
// they made is in the log and Settled holds it.
func decodeOne(t *testing.T, f *test.Follow, v any) {
	t.Helper()
	recs := f.Settled(t, 5*time.Second)
	if len(recs) != 1 {
		t.Fatalf("%d records, want 1", len(recs))
	}
	if err := json.Unmarshal(recs[0].Value, v); err != nil {
		t.Fatal(err)
	}
}
