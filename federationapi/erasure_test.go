package federationapi_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/internal/test/roomtest"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

// TestErasedSenderRedactedForServers: once alice's account on B is deactivated with erase,
// B serves her events to A redacted (same ID, content stripped, B's signature still valid)
// through /event, /backfill, /get_missing_events and /state, although A may see the room's
// whole history; before the erasure A got them whole (sytest "Inbound federation redacts
// events from erased users").
func TestErasedSenderRedactedForServers(t *testing.T) {
	t.Parallel()
	forEngine(t, func(t *testing.T, newDSN func() string) {
		clk := &clock{}
		a, b := newNode(t, newDSN(), clk, nodeOpts{}), newNode(t, newDSN(), clk, nodeOpts{})
		ctx := context.Background()
		if _, err := b.users.PerformAccountCreation(ctx, &uapi.PerformAccountCreationRequest{Localpart: "alice", Password: "pw", AccountType: uapi.AccountTypeUser}); err != nil {
			t.Fatal(err)
		}
		r := newRoomOn(t, b)
		topic := r.next(spec.MRoomTopic, roomtest.StateKey(""), map[string]string{"topic": "alice's topic"})
		b.inputAll(t, r.RoomID, topic)
		msg := r.message("body1")
		later := r.message("body2")
		original := map[string]string{topic.EventID(): string(topic.Content()), msg.EventID(): string(msg.Content()), later.EventID(): string(later.Content())}

		// check fails unless the checked events among raws (one at least) have their
		// content whole, or redacted to {}, and B's valid signature.
		check := func(what string, raws []json.RawMessage, whole bool) {
			t.Helper()
			seen := 0
			for _, raw := range raws {
				ev, err := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersionV10).NewEventFromUntrustedJSON(raw)
				if err != nil {
					t.Fatalf("%s: %v", what, err)
				}
				want, ok := original[ev.EventID()]
				if !ok {
					continue
				}
				seen++
				if got := string(ev.Content()); (got == want) != whole || (!whole && got != "{}") {
					t.Errorf("%s: %s (%s) has content %s, want whole %v", what, ev.EventID(), ev.Type(), got, whole)
				}
				if err = gomatrixserverlib.VerifyEventSignatures(ctx, ev, a.fed.KeyRing(), func(_ spec.RoomID, s spec.SenderID) (*spec.UserID, error) {
					return spec.NewUserID(string(s), true)
				}); err != nil {
					t.Errorf("%s: %s: %v", what, ev.EventID(), err)
				}
			}
			if seen == 0 {
				t.Fatalf("%s returned none of the events checked", what)
			}
		}
		serve := func(whole bool) {
			t.Helper()
			for _, e := range []gomatrixserverlib.PDU{topic, msg, later} {
				txn, err := a.client.GetEvent(ctx, a.name, b.name, e.EventID())
				if err != nil {
					t.Fatalf("/event %s: %v", e.EventID(), err)
				}
				check("/event", txn.PDUs, whole)
			}
			bf, err := a.client.Backfill(ctx, a.name, b.name, r.RoomID, 20, []string{later.EventID()})
			if err != nil {
				t.Fatalf("/backfill: %v", err)
			}
			check("/backfill", bf.PDUs, whole)
			missing, err := a.client.LookupMissingEvents(ctx, a.name, b.name, r.RoomID, fclient.MissingEvents{
				Limit: 20, LatestEvents: []string{later.EventID()}, EarliestEvents: []string{topic.EventID()},
			}, gomatrixserverlib.RoomVersionV10)
			if err != nil {
				t.Fatalf("/get_missing_events: %v", err)
			}
			raws := make([]json.RawMessage, len(missing.Events))
			for i, e := range missing.Events {
				raws[i] = json.RawMessage(e)
			}
			check("/get_missing_events", raws, whole)
			var st fclient.RespState
			if err = call(t, a, b, http.MethodGet, "/_matrix/federation/v1/state/"+url.PathEscape(r.RoomID)+"?event_id="+url.QueryEscape(msg.EventID()), nil, &st); err != nil {
				t.Fatalf("/state: %v", err)
			}
			raws = raws[:0]
			for _, e := range st.StateEvents {
				raws = append(raws, json.RawMessage(e))
			}
			check("/state", raws, whole)
		}

		serve(true)
		if _, err := b.users.PerformAccountDeactivation(ctx, &uapi.PerformAccountDeactivationRequest{Localpart: "alice", Erase: true}); err != nil {
			t.Fatal(err)
		}
		serve(false)
	})
}
