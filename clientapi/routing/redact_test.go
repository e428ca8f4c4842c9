package routing

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gorilla/mux"
	"github.com/matrix-org/gomatrixserverlib/spec"

	rsapi "github.com/matrix-org/dendrite/roomserver/api"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

// redactAPI is membershipAPI that also knows the room's version and no events, and keeps
// the events submitted.
type redactAPI struct {
	membershipAPI
	inputs []rsapi.InputRoomEvent
}

func (a *redactAPI) QueryRoomInfo(context.Context, *rsapi.QueryRoomInfoRequest) (*rsapi.QueryRoomInfoResponse, error) {
	return &rsapi.QueryRoomInfoResponse{Exists: true, RoomVersion: "10"}, nil
}

func (a *redactAPI) QueryEventsByID(context.Context, *rsapi.QueryEventsByIDRequest) (*rsapi.QueryEventsByIDResponse, error) {
	return &rsapi.QueryEventsByIDResponse{}, nil
}

func (a *redactAPI) InputRoomEvents(ctx context.Context, req *rsapi.InputRoomEventsRequest) (*rsapi.InputRoomEventsResponse, error) {
	a.mu.Lock()
	a.inputs = append(a.inputs, req.Input.Events...)
	a.mu.Unlock()
	return a.membershipAPI.InputRoomEvents(ctx, req)
}

// TestRedactWithoutTxnID: POST /rooms/{roomId}/redact/{eventId}, the form without a
// transaction ID that sytest's "Can receive redactions from regular users over federation in
// room version N" uses, redacts the event, each request anew.
func TestRedactWithoutTxnID(t *testing.T) {
	const room, alice, target = "!r:test", "@alice:test", "$target"
	api := &redactAPI{membershipAPI: membershipAPI{membership: map[string]string{alice: spec.Join}}}
	rm := &Rooms{RSAPI: api}
	router := mux.NewRouter().UseEncodedPath()
	for _, route := range rm.Routes() {
		if route.Name == "redactWithoutTxn" {
			router.Methods(route.Method).Path(route.Path).HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				res, err := rm.Redact(r, &uapi.Device{UserID: alice, DeviceID: "DEV"})
				if err != nil {
					http.Error(w, err.Error(), http.StatusBadRequest)
					return
				}
				w.WriteHeader(res.Status)
			})
		}
	}
	for range 2 {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, "/_matrix/client/v3/rooms/"+room+"/redact/%24target", strings.NewReader(`{"reason":"spam"}`))
		router.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			t.Fatalf("POST redact: %d %s", rec.Code, rec.Body)
		}
	}
	if len(api.inputs) != 2 {
		t.Fatalf("%d events submitted, want 2", len(api.inputs))
	}
	for _, in := range api.inputs {
		var content map[string]string
		if err := json.Unmarshal(in.Proto.Content, &content); err != nil {
			t.Fatal(err)
		}
		if in.Proto.Type != spec.MRoomRedaction || in.Proto.Redacts != target || content["reason"] != "spam" {
			t.Fatalf("submitted %+v with content %s", in.Proto, in.Proto.Content)
		}
	}
	if api.inputs[0].TxnID.TransactionID == api.inputs[1].TxnID.TransactionID {
		t.Fatal("two requests without a transaction ID share one, so the second would not redact")
	}
}
