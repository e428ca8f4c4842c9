package presenceserver_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/presenceserver"
	"github.com/matrix-org/dendrite/presenceserver/api"
)

// TestPresenceChangesAndTimeouts: an explicit presence is announced and kept while the user
// syncs, activity alone is not announced, and the idle and offline timeouts apply by
// themselves.
func TestPresenceChangesAndTimeouts(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		log := test.EmbeddedLog(t, 4)
		out := test.FollowTopic(t, log, "out")
		cfg := &config.PresenceServer{Enabled: true, IdleTimeout: config.Duration(300 * time.Millisecond), OfflineTimeout: config.Duration(8 * time.Second)}
		s, err := presenceserver.New(ctx, presenceserver.Deps{Cfg: cfg, DB: db, Log: log, InputTopic: "in", OutputTopic: "out",
			Logger: logrus.NewEntry(logrus.New())})
		if err != nil {
			t.Fatal(err)
		}
		go func() { _ = s.Run(ctx) }() // ends with ctx
		in := &api.Producer{Log: log, Topic: "in"}
		now := time.Now().UnixMilli()
		status := "busy"
		must(t, in.InputPresence(ctx, &api.InputPresenceEvent{UserID: "@a:x", Kind: api.InputKindSet, Presence: api.Unavailable, StatusMsg: &status, TS: now}))
		must(t, in.InputPresence(ctx, &api.InputPresenceEvent{UserID: "@a:x", Kind: api.InputKindSync, Presence: api.Online, TS: now + 1}))
		must(t, in.InputPresence(ctx, &api.InputPresenceEvent{UserID: "@b:x", Kind: api.InputKindSync, Presence: api.Online, TS: now}))
		must(t, in.InputPresence(ctx, &api.InputPresenceEvent{UserID: "@b:x", Kind: "bogus", TS: now})) // dead-lettered, not blocking
		// A user of another server, as their server announced: no timeout applies.
		must(t, in.InputPresence(ctx, &api.InputPresenceEvent{UserID: "@r:remote", Kind: api.InputKindRemote, Presence: api.Online, TS: now}))

		// @a:x: unavailable (kept while syncing), then offline; @b:x: online, unavailable
		// when idle, then offline.
		// The offline timeout is far beyond the idle one, so that a loaded machine's late
		// sweep still finds @b:x idle before it finds them gone.
		var seq map[string][]string
		deadline := time.Now().Add(40 * time.Second)
		for time.Now().Before(deadline) {
			seq = map[string][]string{}
			for _, rec := range out.Wait(t, 0, time.Second) {
				var o api.OutputPresenceEvent
				must(t, json.Unmarshal(rec.Value, &o))
				seq[o.UserID] = append(seq[o.UserID], o.Presence.Presence)
			}
			if len(seq["@a:x"]) >= 2 && len(seq["@b:x"]) >= 3 {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		want := map[string][]string{"@a:x": {api.Unavailable, api.Offline}, "@b:x": {api.Online, api.Unavailable, api.Offline}, "@r:remote": {api.Online}}
		for u, w := range want {
			if len(seq[u]) != len(w) {
				t.Fatalf("%s went %v, want %v", u, seq[u], w)
			}
			for i := range w {
				if seq[u][i] != w[i] {
					t.Fatalf("%s went %v, want %v", u, seq[u], w)
				}
			}
		}
		// The announcement is produced just before its change commits: wait for the commit.
		var res *api.QueryPresenceResponse
		for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			res, err = s.API().QueryPresence(ctx, &api.QueryPresenceRequest{UserID: "@a:x"})
			if err == nil && res.Presence.Presence == api.Offline || time.Now().After(deadline) {
				break
			}
		}
		if err != nil || res.Presence.Presence != api.Offline || res.Presence.StatusMsg == nil || *res.Presence.StatusMsg != "busy" {
			t.Fatalf("query: %+v %v", res, err)
		}
		if res, err = s.API().QueryPresence(ctx, &api.QueryPresenceRequest{UserID: "@never:x"}); err != nil || res.Presence.Presence != api.Offline {
			t.Fatalf("query of an unknown user: %+v %v", res, err)
		}
	})
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
