package api

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/matrix-org/dendrite/internal/matrixerr"
)

// A rejection keeps its HTTP status through JSON (the wait crosses internal HTTP in the
// polylith), and the wire form is stable.
func TestResultJSONKeepsStatus(t *testing.T) {
	in := QueryInputResultResponse{Results: []Result{
		{EventID: "$a"},
		{Err: matrixerr.Forbidden("not a member of this room")},
	}}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"results":[{"event_id":"$a"},{"error":{"errcode":"M_FORBIDDEN","error":"not a member of this room"},"error_status":403}]}`
	if string(b) != want {
		t.Fatalf("wire form\n got %s\nwant %s", b, want)
	}
	var out QueryInputResultResponse
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, out) {
		t.Fatalf("round trip: got %+v", out)
	}
}
