package clientevent_test

import (
	"encoding/json"
	"testing"

	"github.com/matrix-org/dendrite/internal/clientevent"
)

// TestUnsignedFieldsMerge: age and transaction_id join what the event's unsigned holds.
func TestUnsignedFieldsMerge(t *testing.T) {
	c, err := clientevent.New("$e", []byte(`{"type":"m.room.message","sender":"@a:x","origin_server_ts":1000,"content":{},"unsigned":{"prev_sender":"@b:x"}}`))
	if err != nil {
		t.Fatal(err)
	}
	c.SetAge(1500)
	c.SetTransactionID("t1")
	var u map[string]any
	if err := json.Unmarshal(c.Unsigned, &u); err != nil {
		t.Fatal(err)
	}
	if u["age"] != float64(500) || u["transaction_id"] != "t1" || u["prev_sender"] != "@b:x" {
		t.Fatalf("unsigned %v", u)
	}
	c.SetAge(0) // a clock behind the sender's: never negative
	if err := json.Unmarshal(c.Unsigned, &u); err != nil || u["age"] != float64(0) {
		t.Fatalf("unsigned %v %v", u, err)
	}
}
