package federationapi_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/matrix-org/dendrite/internal/test/roomtest"
)

// TestHistoryVisibilityForServers: B's room turns from world_readable to joined history
// before A's user joins. A then reads B's events through /event, /backfill and
// /get_missing_events: whole where one of A's users could see them by the state at the
// event, redacted (same ID, no content) where none could. C, with no user in the room,
// gets 403 once the room is no longer world readable.
func TestHistoryVisibilityForServers(t *testing.T) {
	t.Parallel()
	forEngine(t, func(t *testing.T, newDSN func() string) {
		clk := &clock{}
		a, b, c := newNode(t, newDSN(), clk, nodeOpts{}), newNode(t, newDSN(), clk, nodeOpts{}), newNode(t, newDSN(), clk, nodeOpts{})
		ctx := context.Background()
		r := newRoomOn(t, b)
		public := r.message("said while world readable")
		hidden := r.next(spec.MRoomHistoryVisibility, roomtest.StateKey(""), map[string]string{"history_visibility": "joined"})
		b.inputAll(t, r.RoomID, hidden)
		secret := r.message("said before anyone of A joined")

		dave := "@dave:" + string(a.name)
		mj, err := a.client.MakeJoin(ctx, a.name, b.name, r.RoomID, dave)
		if err != nil {
			t.Fatalf("make_join: %v", err)
		}
		proto := mj.JoinEvent
		// A display name, which a redacted copy would lack.
		if err = proto.SetContent(map[string]string{"membership": spec.Join, "displayname": "Dave"}); err != nil {
			t.Fatal(err)
		}
		join, err := gomatrixserverlib.MustGetRoomVersion(mj.RoomVersion).NewEventBuilderFromProtoEvent(&proto).Build(time.Now(), a.name, a.keyID, a.key)
		if err != nil {
			t.Fatal(err)
		}
		if _, err = a.client.SendJoin(ctx, a.name, b.name, join); err != nil {
			t.Fatalf("send_join: %v", err)
		}
		r.last, r.depth = join, join.Depth()
		after := r.message("said after dave joined")

		// Each event checked, and whether A may see it whole.
		events := []gomatrixserverlib.PDU{public, hidden, secret, join, after}
		whole := map[string]bool{public.EventID(): true, hidden.EventID(): true, secret.EventID(): false, join.EventID(): true, after.EventID(): true}
		original := map[string]string{}
		for _, e := range events {
			original[e.EventID()] = string(e.Content())
		}
		check := func(what string, pdus []json.RawMessage) {
			t.Helper()
			seen := 0
			for _, raw := range pdus {
				ev, err := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersionV10).NewEventFromUntrustedJSON(raw)
				if err != nil {
					t.Fatalf("%s: %v", what, err)
				}
				want, ok := whole[ev.EventID()]
				if !ok {
					continue
				}
				seen++
				if got := string(ev.Content()) == original[ev.EventID()]; got != want {
					t.Errorf("%s: %s (%s) has content %s, want whole %v", what, ev.EventID(), ev.Type(), ev.Content(), want)
				}
				// A redacted copy still carries B's valid signature.
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

		for _, e := range events {
			txn, err := a.client.GetEvent(ctx, a.name, b.name, e.EventID())
			if err != nil {
				t.Fatalf("/event %s: %v", e.EventID(), err)
			}
			check("/event", txn.PDUs)
		}
		bf, err := a.client.Backfill(ctx, a.name, b.name, r.RoomID, 20, []string{after.EventID()})
		if err != nil {
			t.Fatalf("/backfill: %v", err)
		}
		if len(bf.PDUs) < len(whole) {
			t.Fatalf("/backfill returned %d events, want at least %d", len(bf.PDUs), len(whole))
		}
		check("/backfill", bf.PDUs)
		missing, err := a.client.LookupMissingEvents(ctx, a.name, b.name, r.RoomID, fclient.MissingEvents{
			Limit: 20, LatestEvents: []string{after.EventID()}, EarliestEvents: []string{public.EventID()},
		}, gomatrixserverlib.RoomVersionV10)
		if err != nil {
			t.Fatalf("/get_missing_events: %v", err)
		}
		raws := make([]json.RawMessage, len(missing.Events))
		for i, e := range missing.Events {
			raws[i] = json.RawMessage(e)
		}
		check("/get_missing_events", raws)

		_, err = c.client.GetEvent(ctx, c.name, b.name, public.EventID())
		wantHTTP(t, err, http.StatusForbidden, "M_FORBIDDEN")
	})
}
