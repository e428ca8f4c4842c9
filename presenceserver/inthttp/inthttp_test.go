package inthttp_test

import (
	"context"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/gorilla/mux"
	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/internal/config"
	ihttp "github.com/matrix-org/dendrite/internal/inthttp"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/presenceserver"
	"github.com/matrix-org/dendrite/presenceserver/api"
	"github.com/matrix-org/dendrite/presenceserver/inthttp"
)

// TestEveryMethodServed fails when a method is added to api.ServerAPI and not to Register.
func TestEveryMethodServed(t *testing.T) {
	srv := inthttp.Register(mux.NewRouter(), (*inthttp.Client)(nil), ihttp.ServerOptions{})
	want, err := ihttp.Methods(reflect.TypeFor[api.ServerAPI]())
	if err != nil {
		t.Fatal(err)
	}
	if got := srv.Methods(); !slices.Equal(got, want) {
		t.Fatalf("served %v, api.ServerAPI has %v", got, want)
	}
}

// TestPresenceWaitOverHTTP: a writer whose wait goes over internal HTTP (the polylith)
// acknowledges a presence only once the presenceserver took it. While the presenceserver
// does not run, the wait ends at its timeout with 504 M_UNKNOWN; once it runs, the client's
// retry is acknowledged, and at that moment the presence is stored (QueryPresence) and its
// announcement is in the outbox, exactly once (QueryOutputRecords, not polled).
func TestPresenceWaitOverHTTP(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		log := test.EmbeddedLog(t, 1)
		s, err := presenceserver.New(ctx, presenceserver.Deps{Cfg: &config.Defaults().PresenceServer, DB: db, Log: log,
			InputTopic: "in", OutputTopic: "out", Logger: logrus.NewEntry(logrus.New())})
		if err != nil {
			t.Fatal(err)
		}
		client := inthttp.NewClient(test.InternalServer(t, func(r *mux.Router, o ihttp.ServerOptions) { inthttp.Register(r, s.API(), o) }),
			ihttp.ClientOptions{})
		in := &api.Producer{Log: log, Topic: "in", Wait: client}
		status := "away"
		set := &api.InputPresenceEvent{UserID: "@a:x", Kind: api.InputKindSet, Presence: api.Unavailable, StatusMsg: &status,
			TS: time.Now().UnixMilli()}
		test.InputTakenOnceRunning(ctx, t, s.Run, func(timeout time.Duration) error {
			in.Timeout = timeout
			return in.InputPresence(ctx, set)
		})
		got, err := client.QueryPresence(ctx, &api.QueryPresenceRequest{UserID: "@a:x"})
		if err != nil || got.Presence.Presence != api.Unavailable || got.Presence.StatusMsg == nil || *got.Presence.StatusMsg != status {
			t.Fatalf("the presence once the retry was acknowledged: %+v %v", got, err)
		}
		res, err := client.QueryOutputRecords(ctx, &api.QueryOutputRecordsRequest{})
		if err != nil || len(res.Records) != 1 || res.LastSeq != 1 {
			t.Fatalf("the outbox once the retry was acknowledged: %+v %v", res, err)
		}
	})
}
